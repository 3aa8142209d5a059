"""Whole-model save/load: bit-identical weights and outputs, expected sizes, safe failures."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nnshrink.core import set_submodule
from nnshrink.models import create, from_reference, spec_of
from nnshrink.storage import (
    FormatError,
    is_nns_file,
    load,
    read_header,
    read_state_dict,
    save,
    storage_report,
)
from nnshrink.storage.model import tensor_kinds
from tests.conftest import TinyConvNet

DATA = Path(__file__).parent / "data"


def _prune_and_share(model: nn.Module, sparsity: float = 0.9, levels: int = 16) -> nn.Module:
    """Magnitude-prune conv/linear weights and snap survivors to ``levels`` shared values."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                w[w.abs() < w.abs().flatten().quantile(sparsity)] = 0
                nz = w != 0
                table = torch.linspace(float(w[nz].min()), float(w[nz].max()), levels)
                w[nz] = table[(w[nz][:, None] - table).abs().argmin(dim=1)]
    return model


def _randomize_bn(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


def test_tiny_convnet_roundtrip_into_given_model(tmp_path, tiny_convnet, mnist_batch):
    model = _prune_and_share(tiny_convnet).eval()
    _randomize_bn(model)
    path = tmp_path / "net.nns"
    report = save(model, path, metrics={"top1": 0.5})
    assert is_nns_file(path)
    fresh = type(model)().eval()
    loaded = load(path, model=fresh)
    assert loaded is fresh
    _assert_same(model, loaded)
    assert torch.equal(model(mnist_batch), loaded(mnist_batch))
    assert read_header(path)["metrics"] == {"top1": 0.5}
    encodings = {row.name: row.encoding for row in report}
    assert encodings["conv2.weight"] in ("sparse_codebook", "codebook")
    assert encodings["bn1.running_var"] == "dense"
    assert report.file_bytes == path.stat().st_size


def test_zoo_model_is_rebuilt_from_the_file(tmp_path):
    model = _prune_and_share(create("lenet5"), sparsity=0.92, levels=32).eval()
    path = tmp_path / "lenet5.nns"
    save(model, path)
    loaded = load(path).eval()
    _assert_same(model, loaded)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))


def test_expected_size_without_huffman(tmp_path, tiny_mlp):
    """Oracle: bytes counted by hand from the paper's scheme (k-bit gaps, fillers, b-bit codes)."""
    model = _prune_and_share(tiny_mlp, sparsity=0.75, levels=4)
    path = tmp_path / "mlp.nns"
    report = save(
        model,
        path,
        huffman=False,
        index_bits=3,
        bits=2,
        value_dtype="float32",
        min_numel=64,
        encoding={"1.weight": "sparse_codebook", "3.weight": "sparse_codebook"},
    )
    expected = 0
    for name, tensor in model.state_dict().items():
        flat = tensor.flatten().tolist()
        if name.endswith("weight"):
            entries, gap, values = 0, 0, set()
            for v in flat:
                if v == 0:
                    gap += 1
                    continue
                fillers = gap // 8
                entries += fillers + 1
                values.add(v)
                values |= {0.0} if fillers else set()
                gap = 0
            expected += math.ceil(entries * 3 / 8) + math.ceil(entries * 2 / 8) + 4 * len(values)
        else:
            expected += 4 * len(flat)
    assert report.total.stored_bytes == expected
    dense = sum(t.numel() * 4 for t in model.state_dict().values())
    assert report.total.dense_bytes == dense
    assert path.stat().st_size < dense


def test_lenet300_deep_compression_size(tmp_path):
    """92% sparse + 32 shared values: the file is ~40x smaller than dense fp32 (paper: 40x)."""
    torch.manual_seed(0)
    model = create("lenet300")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                w.normal_(0, 0.05)
                w[w.abs() < w.abs().flatten().quantile(0.92)] = 0
                nz = w != 0
                levels = torch.quantile(w[nz], torch.linspace(0, 1, 32))
                w[nz] = levels[(w[nz][:, None] - levels).abs().argmin(dim=1)]
    path = tmp_path / "lenet300.nns"
    report = save(model, path)
    _assert_same(model, load(path))
    dense_bytes = 266_610 * 4
    assert report.total.dense_bytes == dense_bytes
    assert report.file_bytes == path.stat().st_size
    assert dense_bytes / report.file_bytes > 25
    ip1 = report.rows[0]
    assert ip1.kept == pytest.approx(0.08, abs=1e-3)
    assert ip1.weight_bits <= 5.0 + 1e-9 and ip1.index_bits < 5.0


def test_half_precision_models(tmp_path, tiny_mlp):
    pruned = _prune_and_share(tiny_mlp)
    for dtype in (torch.float16, torch.bfloat16):
        model = copy.deepcopy(pruned).to(dtype)
        path = tmp_path / f"{dtype}.nns"
        save(model, path, min_numel=1)
        fresh = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(
            dtype
        )
        _assert_same(model, load(path, model=fresh))


def test_custom_module_class_needs_a_model(tmp_path, tiny_convnet):
    path = tmp_path / "net.nns"
    save(tiny_convnet, path)
    assert read_header(path)["architecture"] is None
    with pytest.raises(FormatError, match="load\\(path, model="):
        load(path)
    assert isinstance(load(path, factory=TinyConvNet), TinyConvNet)


def test_sequential_of_standard_layers_is_rebuilt(tmp_path, tiny_mlp):
    model = _prune_and_share(tiny_mlp)
    path = tmp_path / "mlp.nns"
    save(model, path)
    loaded = load(path)
    _assert_same(model, loaded)
    x = torch.randn(2, 16)
    assert torch.equal(model.eval()(x), loaded(x))


def test_structurally_pruned_zoo_model_is_rebuilt(tmp_path):
    model = create("lenet300")
    set_submodule(model, "1", nn.Linear(784, 120))  # as after removing 180 hidden neurons
    set_submodule(model, "3", nn.Linear(120, 100))
    _prune_and_share(model, sparsity=0.8, levels=32)
    path = tmp_path / "slim.nns"
    save(model, path)
    loaded = load(path)
    assert loaded[1].out_features == 120
    _assert_same(model, loaded)


def test_wrong_model_is_rejected_untouched(tmp_path, tiny_mlp):
    path = tmp_path / "mlp.nns"
    save(tiny_mlp, path)
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(FormatError, match="3.bias: stored shape \\(4,\\) != model shape \\(5,\\)"):
        load(path, model=other)
    for name, tensor in other.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_corrupted_file_never_touches_the_model(tmp_path, tiny_convnet):
    path = tmp_path / "net.nns"
    save(_prune_and_share(tiny_convnet), path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    fresh = type(tiny_convnet)()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(FormatError, match="CRC32 mismatch"):
        load(path, model=fresh)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_options_validation(tmp_path, tiny_mlp):
    with pytest.raises(KeyError, match="unknown tensors"):
        save(tiny_mlp, tmp_path / "a.nns", encoding={"nope.weight": "dense"})
    with pytest.raises(ValueError, match="index_bits"):
        save(tiny_mlp, tmp_path / "a.nns", index_bits=12)
    with pytest.raises(ValueError, match="unknown encoding 'huffman'"):
        save(tiny_mlp, tmp_path / "a.nns", encoding="huffman")
    with pytest.raises(ValueError, match="value_dtype"):
        save(tiny_mlp, tmp_path / "a.nns", value_dtype="int8")
    with pytest.raises(ValueError, match="cannot encode tensor '1.weight'"):
        save(tiny_mlp, tmp_path / "a.nns", encoding={"1.weight": "ternary"})
    assert not (tmp_path / "a.nns").exists()


def test_tensor_kinds(tiny_convnet):
    kinds = tensor_kinds(tiny_convnet)
    assert kinds["conv1.weight"] == "conv" and kinds["fc.weight"] == "fc"
    assert kinds["bn1.running_mean"] == "norm" and kinds["conv1.bias"] == "other"


def test_report_from_header_matches_file(tmp_path, tiny_convnet):
    path = tmp_path / "net.nns"
    saved = save(_prune_and_share(tiny_convnet), path)
    again = storage_report(path)
    assert again.to_dict() == saved.to_dict()
    head = read_header(path, with_blob_index=True)
    assert storage_report(head).total == saved.total
    assert np.isclose(saved.dense_file_ratio, saved.total.dense_bytes / path.stat().st_size)


def test_index_bits_per_layer_kind(tmp_path, tiny_convnet):
    model = _prune_and_share(tiny_convnet)
    forced = {"conv2.weight": "sparse", "fc.weight": "sparse"}
    path = tmp_path / "net.nns"
    save(model, path, encoding=forced)
    tensors = read_header(path)["tensors"]
    assert (tensors["conv2.weight"]["index_bits"], tensors["fc.weight"]["index_bits"]) == (4, 5)
    save(model, path, encoding=forced, index_bits={"fc": 3})
    tensors = read_header(path)["tensors"]
    assert (tensors["conv2.weight"]["index_bits"], tensors["fc.weight"]["index_bits"]) == (4, 3)
    save(model, path, encoding=forced, index_bits="auto")
    for name in forced:
        assert 1 <= read_header(path)["tensors"][name]["index_bits"] <= 8


def test_deep_compression_pipeline_with_weight_sharing(tmp_path):
    """prune -> k-means sharing -> strip -> save: sparse + codebook found, outputs identical."""
    from nnshrink.core import compress_
    from nnshrink.sharing.kmeans import WeightSharing, strip_sharing

    model = create("lenet300")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                w[w.abs() < w.abs().flatten().quantile(0.92)] = 0
    compress_(model, WeightSharing(bits=5, iterations=10))
    plain = strip_sharing(model).eval()  # masked-out weights become -0.0 for negative centroids
    path = tmp_path / "dc.nns"
    report = save(plain, path)
    rows = {row.name: row for row in report}
    assert rows["1.weight"].encoding == "sparse_codebook"
    assert rows["1.weight"].kept == pytest.approx(0.08, abs=1e-3)
    assert report.dense_file_ratio > 25
    loaded = load(path)
    _assert_same(plain, loaded)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(plain(x), loaded(x))


def test_factory_model_needs_the_factory_or_trust(tmp_path):
    model = _prune_and_share(from_reference("tests.conftest:TinyConvNet", {"num_classes": 4}))
    model.fc = nn.Linear(64, 2)
    path = tmp_path / "user.nns"
    save(model, path)
    with pytest.raises(
        FormatError, match="pass factory='tests.conftest:TinyConvNet'.*--trust-code"
    ):
        load(path)
    x = torch.randn(2, 1, 8, 8)
    for kwargs in ({"factory": "tests.conftest:TinyConvNet"}, {"trust_code": True}):
        loaded = load(path, **kwargs)
        _assert_same(model, loaded)
        assert torch.equal(model.eval()(x), loaded(x)) and loaded.fc.out_features == 2
        assert spec_of(loaded)["factory"] == "tests.conftest:TinyConvNet"


def test_version_1_files_still_load():
    """A file written by the previous format (nnshrink before this change), kept in tests/storage/data."""
    path = DATA / "v1_mlp_pruned.nns"
    model = load(path)
    state, _ = read_state_dict(path)
    oracle = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 10))
    oracle.load_state_dict(state)
    x = torch.randn(3, 1, 4, 4)
    assert model[1].out_features == 6 and torch.equal(model(x), oracle.eval()(x))


def test_expansion_budget(tmp_path):
    model = nn.Sequential(nn.Linear(1000, 1000, bias=False))
    nn.init.zeros_(model[0].weight)  # 4 MB of zeros: a file of a few hundred bytes
    path = tmp_path / "zeros.nns"
    save(model, path)
    size = path.stat().st_size
    assert size < 1000
    assert torch.equal(load(path)[0].weight, model[0].weight)  # under the 16 MiB floor
    big = nn.Sequential(nn.Linear(3000, 2000, bias=False))  # 24 MB of zeros
    nn.init.zeros_(big[0].weight)
    save(big, path)
    with pytest.raises(FormatError, match="more than the file justifies.*max_expansion"):
        load(path)
    assert load(path, max_expansion=1e6)[0].weight.shape == (2000, 3000)

import numpy as np
import pytest
import torch

from nnshrink.data import (
    DataError,
    from_factory,
    from_image_folder,
    from_tensor_file,
    holdout_split,
    open_data,
)
from nnshrink.data.source import Limited


def test_factory_gets_batch_size_and_is_checked():
    bundle = from_factory("tests.usercode:make_data", {"n": 64}, batch_size=16)
    assert tuple(bundle.example_inputs().shape) == (16, 1, 12, 12)
    assert bundle.sample_shape() == (1, 12, 12) and bundle.val is None
    assert from_factory("tests.usercode:make_data_with_val").val is not None
    with pytest.raises(DataError, match=r"returns \(train, test\)"):
        from_factory("tests.usercode:bad_data")
    with pytest.raises(DataError, match="cannot import"):
        from_factory("tests.nowhere:make_data")
    with pytest.raises(DataError, match="package.module:name"):
        from_factory("not a reference")


def test_tensor_files_npz_and_pt(tmp_path):
    x = np.random.rand(10, 5).astype(np.float32)
    y = np.arange(10) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    bundle = from_tensor_file(tmp_path / "d.npz", batch_size=4)
    batches = list(bundle.train)
    assert [len(b[0]) for b in batches] == [4, 4, 2] and bundle.num_classes == 2
    assert torch.equal(torch.cat([b[0] for b in bundle.test]), torch.from_numpy(x[:4]))
    torch.save({"x_train": torch.zeros(3, 2), "y_train": torch.zeros(3), "x_test": torch.zeros(1, 2),
                "y_test": torch.zeros(1)}, tmp_path / "d.pt")  # fmt: skip
    assert from_tensor_file(tmp_path / "d.pt").sample_shape() == (2,)
    np.savez(tmp_path / "bad.npz", x_train=x)
    with pytest.raises(DataError, match="missing arrays"):
        from_tensor_file(tmp_path / "bad.npz")


def test_a_pickle_in_a_pt_file_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x_train": Evil()}, path)
    with pytest.raises(DataError, match="not a readable tensor file"):
        from_tensor_file(path)


def test_image_folder_flat_and_split_layouts(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "flat" / cls).mkdir(parents=True)
        for i in range(5):
            pixels = (rng.random((10, 14)) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / "flat" / cls / f"{i}.png")
    bundle = from_image_folder(tmp_path / "flat", image_size=8, batch_size=4)
    assert bundle.num_classes == 2 and bundle.sample_shape() == (1, 8, 8)
    train = torch.cat([x for x, _ in bundle.train])
    test_labels = torch.cat([y for _, y in bundle.test])
    assert len(train) == 8 and sorted(test_labels.tolist()) == [0, 1]  # a fifth of each class
    # normalised with the training images' own statistics
    assert abs(float(train.mean())) < 1e-5 and float(train.std()) == pytest.approx(1, abs=0.05)
    with pytest.raises(DataError, match="no class folders"):
        from_image_folder(tmp_path / "flat" / "cat")


def test_limits_and_holdout_do_not_overlap():
    bundle = open_data({"factory": "tests.usercode:make_data", "batch_size": 32, "limit": 40,
                        "train_limit": 70})  # fmt: skip
    assert sum(len(x) for x, _ in bundle.test) == 40
    assert sum(len(x) for x, _ in bundle.train) == 70
    assert [len(x) for x, _ in Limited([(torch.zeros(5), torch.zeros(5))] * 3, 7)] == [5, 2]
    train = from_factory("tests.usercode:make_data").train
    rest, held = holdout_split(train, 0.25, seed=0)
    xs_rest = torch.cat([x for x, _ in rest])
    xs_held = torch.cat([x for x, _ in held])
    assert len(xs_rest) + len(xs_held) == 384 and len(xs_held) == 96
    rows = {tuple(r.flatten()[:6].tolist()) for r in xs_rest}
    assert not any(tuple(r.flatten()[:6].tolist()) in rows for r in xs_held)


def test_open_data_names_one_source():
    with pytest.raises(DataError, match="exactly one of"):
        open_data({"name": "mnist", "file": "x.npz"})
    with pytest.raises(DataError, match="unknown data set"):
        open_data({"name": "imagenet"})

"""Stored-bytes accounting: per-tensor rows checked against hand-counted bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.storage import read_header, save, storage_report


def _worked_example(path):
    """The example of docs/file-format.md section 5."""
    model = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 2], model.weight[1, 4], model.weight[1, 7] = 0.5, -0.25, 0.5
    save(model, path, encoding="sparse_codebook", index_bits=2, huffman=False, min_numel=1)
    return model


def test_worked_example_row(tmp_path):
    path = tmp_path / "ex.nns"
    _worked_example(path)
    (row,) = storage_report(path).rows
    assert (row.numel, row.nnz, row.entries) == (16, 3, 5)  # 3 non-zeros + 2 fillers
    assert row.kept == pytest.approx(3 / 16)
    assert (row.positions_bytes, row.values_bytes, row.codebook_bytes) == (2, 2, 6)
    assert row.index_bits == pytest.approx(16 / 5)  # 10 bits padded to 2 bytes, over 5 entries
    assert row.weight_bits == pytest.approx(16 / 5)
    assert row.stored_bytes == 10 and row.dense_bytes == 64
    assert row.compression == pytest.approx(6.4)


def test_worked_example_bytes_match_the_spec(tmp_path):
    path = tmp_path / "ex.nns"
    _worked_example(path)
    data = path.read_bytes()
    assert data[:24].hex(" ").startswith("4e 4e 53 48 52 49 4e 4b 02 00 00 00")
    assert data[-10:] == bytes.fromhex("7e02 0000 0038 00b4 8101")


def test_totals_and_dense_rows(tmp_path):
    model = nn.Sequential(nn.Linear(40, 30), nn.BatchNorm1d(30))
    with torch.no_grad():
        model[0].weight[model[0].weight.abs() < 0.1] = 0
    path = tmp_path / "m.nns"
    report = save(model, path, value_dtype="float32")
    rows = {r.name: r for r in report}
    bias = rows["0.bias"]
    assert (bias.encoding, bias.weight_bits, bias.index_bits) == ("dense", 32.0, 0.0)
    assert rows["1.num_batches_tracked"].dense_bytes == 8
    total = report.total
    assert total.stored_bytes == sum(r.stored_bytes for r in report)
    assert total.dense_bytes == sum(r.dense_bytes for r in report)
    assert total.nnz == sum(r.nnz for r in report)
    assert total.compression == pytest.approx(total.dense_bytes / total.stored_bytes)
    assert report.file_bytes == path.stat().st_size > total.stored_bytes
    assert report.dense_file_ratio == pytest.approx(total.dense_bytes / report.file_bytes)
    head_len = int.from_bytes(path.read_bytes()[12:20], "little")
    assert report.overhead_bytes == 24 + head_len


def test_header_without_index_is_rejected(tmp_path):
    path = tmp_path / "ex.nns"
    _worked_example(path)
    with pytest.raises(ValueError, match="with_blob_index=True"):
        storage_report(read_header(path))

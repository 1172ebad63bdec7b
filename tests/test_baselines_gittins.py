"""Gittins indices: published values, agreement with plain bisection, monotonicity."""

import pytest
import torch

from rl2_lightning.baselines.gittins import (
    compute_gittins_table,
    default_depth,
    gittins_index_bisection,
    gittins_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "gamma, expected",
    # Bernoulli arm, Beta(1, 1) prior: Gittins, Glazebrook & Weber (2011), Multi-armed Bandit Allocation
    # Indices, 2nd ed., Table 8.4 (indices of Beta(a, b) states), state a = b = 1.
    [(0.9, 0.7029), (0.95, 0.7614), (0.99, 0.8699)],
)
def test_published_indices(gamma, expected):
    table = compute_gittins_table(4, gamma, depth=default_depth(4, gamma, tol=1e-3), grid_size=256)
    assert table[0, 0].item() == pytest.approx(expected, abs=1e-4)


def test_table_matches_bisection():
    gamma, depth = 0.9, default_depth(10, 0.9, tol=1e-6)
    table = compute_gittins_table(10, gamma, depth=depth)
    for s, f in [(0, 0), (1, 0), (0, 1), (3, 2), (0, 7), (6, 4)]:
        ref = gittins_index_bisection(1 + s, 1 + f, gamma, depth)
        assert table[s, f].item() == pytest.approx(ref, abs=1e-6)


def test_monotone_in_counts():
    table = compute_gittins_table(30, 0.95)
    for n in range(1, 30):
        s = torch.arange(n + 1)
        diag = table[s, n - s]  # same number of pulls, more successes
        assert (diag[1:] > diag[:-1]).all()
    assert (table[1:20, 0] > table[:19, 0]).all()  # a success raises the index
    assert (table[0, 1:20] < table[0, :19]).all()  # a failure lowers it
    # the index exceeds the posterior mean (value of information)
    s, f = torch.meshgrid(torch.arange(31), torch.arange(31), indexing="ij")
    ok = s + f <= 30
    assert (table[ok] > ((s + 1) / (s + f + 2))[ok]).all()


def test_cache_roundtrip(tmp_path):
    gittins_table.cache_clear()
    a = gittins_table(6, 0.3, cache_dir=tmp_path)
    gittins_table.cache_clear()
    b = gittins_table(6, 0.3, cache_dir=tmp_path)  # read back from the file
    assert len(list(tmp_path.iterdir())) == 1 and a.shape == b.shape == (7, 7)
    ref = compute_gittins_table(6, 0.3)
    ok = ~torch.isnan(ref)
    torch.testing.assert_close(a[ok], ref[ok], atol=1e-4, rtol=0)
    torch.testing.assert_close(a[ok], b[ok], atol=1e-6, rtol=0)

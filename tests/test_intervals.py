"""The project's intervals and tests: simulated coverage at the seed counts used,
Fieller's bounds against their defining t-test, Holm against a hand loop, the
minimum detectable effect against simulated power."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from probe_lab import metrics

REPS = 20_000
"""Simulated studies per check: the binomial SE of a coverage near 0.95 is 0.0015,
so the [0.92, 0.98] band is 20 SEs wide and a wrong width cannot pass by luck."""


def percentile_bootstrap_pgr(w, s, c, *, n_boot: int, seed: int) -> tuple:
    """The percentile bootstrap of PGR over seeds that the project no longer
    reports, kept here as the comparison: resample seeds jointly, take the PGR of
    the resampled means, drop resamples without a gap, central 95% quantiles."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(w), size=(n_boot, len(w)))
    values = metrics.pgr(w[idx].mean(1), s[idx].mean(1), c[idx].mean(1), warn=False)
    return tuple(np.quantile(values[np.isfinite(values)], [0.025, 0.975]))


def draw(rng, kind: str, size) -> np.ndarray:
    """Standardized noise (mean 0, SD 1): normal, or gamma with shape 4
    (skewness 1, a right tail like a seed whose training went badly)."""
    if kind == "normal":
        return rng.standard_normal(size)
    return (rng.gamma(4.0, 1.0, size) - 4.0) / 2.0


KINDS = ("normal", "skewed")
SEEDS = (5, 10)


def covered(low, high, truth) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seeds", SEEDS)
def test_t_and_paired_intervals_cover(kind, seeds):
    rng = np.random.default_rng(seeds)
    for effect, sd in ((0.0, 0.01), (0.02, 0.01), (-0.05, 0.03)):
        x = effect + sd * draw(rng, kind, (REPS, seeds))
        _mean, low, high = metrics.t_interval(x)
        assert 0.92 <= covered(low, high, effect) <= 0.98, (kind, seeds, effect)
        # paired: a shared per-seed component that pairing must remove
        shared = 0.05 * rng.standard_normal((REPS, seeds))
        b = 0.7 + shared
        a = b + x
        paired = metrics.paired_difference(a, b)
        assert 0.92 <= covered(paired.low, paired.high, effect) <= 0.98
        unpaired = metrics.t_interval(a).high - metrics.t_interval(a).mean
        assert np.median(paired.high - paired.mean) < np.median(unpaired)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seeds", SEEDS)
def test_pgr_interval_covers(kind, seeds):
    """Fieller's interval for E[student - weak] / E[ceiling - weak], paired per
    seed: gaps large enough that PGR is defined in (nearly) every study."""
    rng = np.random.default_rng(100 + seeds)
    for rho, gap, sd in ((0.0, 0.15, 0.03), (0.4, 0.15, 0.03), (1.0, 0.3, 0.05)):
        weak = 0.6 + 0.02 * draw(rng, kind, (REPS, seeds))
        gaps = gap + sd * draw(rng, kind, (REPS, seeds))
        gains = rho * gaps + 0.02 * draw(rng, kind, (REPS, seeds))
        out = metrics.pgr_interval(weak, weak + gains, weak + gaps)
        assert np.mean(out.reason != "") < 0.001
        assert 0.92 <= covered(out.low, out.high, rho) <= 0.98, (kind, seeds, rho)


def test_fieller_bounds_solve_the_paired_t_test():
    """At each bound rho, the paired t-test of gain - rho * gap sits exactly at the
    interval's level; inside it does not reject, just outside it does."""
    rng = np.random.default_rng(0)
    weak = 0.6 + 0.01 * rng.standard_normal(6)
    gap = 0.2 + 0.03 * rng.standard_normal(6)
    student = weak + 0.5 * gap + 0.02 * rng.standard_normal(6)
    out = metrics.pgr_interval(weak, student, weak + gap, confidence=0.9)
    gain = student - weak
    for bound in (out.low, out.high):
        p = metrics.paired_difference(gain, bound * gap).p_value
        assert p == pytest.approx(0.1, abs=1e-9)
    assert metrics.paired_difference(gain, out.pgr * gap).p_value > 0.1
    assert out.pgr == pytest.approx(gain.mean() / gap.mean())
    assert metrics.paired_difference(gain, (out.high + 0.01) * gap).p_value < 0.1


def test_pgr_undefined_where_the_gap_interval_holds_zero():
    weak = np.array([0.70, 0.71, 0.69, 0.70])
    ceiling = weak + np.array([0.02, -0.01, 0.03, 0.0])  # gap interval holds 0
    student = weak + 0.01
    out = metrics.pgr_interval(weak, student, ceiling)
    assert out.reason == metrics.UNDEFINED and np.isnan(out.low)
    assert out.pgr == pytest.approx(0.01 / 0.01)
    assert metrics.t_interval(ceiling - weak).low < 0
    below = metrics.pgr_interval(weak, student, weak - 0.05)
    assert below.reason == metrics.NO_GAP and np.isnan(below.pgr)
    one = metrics.pgr_interval([0.6], [0.7], [0.8])
    assert one.reason == metrics.FEW_SEEDS and one.pgr == pytest.approx(0.5)
    # batched: one call, one reason per row
    batch = metrics.pgr_interval(
        np.stack([weak, weak]), student, np.stack([ceiling, weak + 0.2])
    )
    assert list(batch.reason == "") == [False, True]


def test_t_interval_matches_scipy_and_drops_nans():
    x = np.array([0.1, 0.4, np.nan, 0.25, 0.3])
    mean, low, high = metrics.t_interval(x, confidence=0.9)
    finite = x[np.isfinite(x)]
    ref = stats.t.interval(0.9, 3, loc=finite.mean(), scale=stats.sem(finite))
    assert (low, high) == pytest.approx(ref) and mean == pytest.approx(0.2625)
    assert isinstance(low, float)
    with pytest.raises(ValueError, match="confidence"):
        metrics.t_interval(x, confidence=95)


def test_paired_difference_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=7), rng.normal(size=7)
    out = metrics.paired_difference(a, b)
    assert out.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out.seeds == 7 and out.sd == pytest.approx(np.std(a - b, ddof=1))
    same = metrics.paired_difference([0.7, 0.8], [0.7, 0.8])
    assert same.p_value == 1.0 and same.mean == 0.0


def test_holm_against_a_hand_step_down():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.5])
    adjusted = metrics.holm(p)
    order = [3, 0, 2, 1, 5]  # ascending, NaN left out: m = 5
    running, expect = 0.0, {}
    for i, j in enumerate(order):
        running = max(running, min(1.0, p[j] * (5 - i)))
        expect[j] = running
    for j, value in expect.items():
        assert adjusted[j] == pytest.approx(value)
    assert np.isnan(adjusted[4])
    # rejections at 0.05: 0.005*5 and 0.01*4 pass, then 0.03*3 fails and stops
    assert list(np.flatnonzero(adjusted <= 0.05)) == [0, 3]


def test_minimum_detectable_effect_has_the_stated_power():
    seeds, sd = 5, 0.01
    mde = metrics.minimum_detectable_effect(sd, seeds)
    rng = np.random.default_rng(2)
    x = mde + sd * rng.standard_normal((40_000, seeds))
    p = stats.ttest_1samp(x, 0.0, axis=1).pvalue
    assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.01)
    # many seeds: the normal formula (z_0.975 + z_0.8) sd / sqrt(S)
    big = metrics.minimum_detectable_effect(1.0, 2000)
    assert big == pytest.approx(2.8016 / np.sqrt(2000), rel=2e-3)
    strict = metrics.minimum_detectable_effect(sd, seeds, alpha=0.05 / 30)
    assert strict > mde
    with pytest.raises(ValueError, match="seeds >= 2"):
        metrics.minimum_detectable_effect(sd, 1)


def test_the_coverage_check_fails_the_old_percentile_bootstrap():
    """The same check has power: the percentile bootstrap of PGR over 5 normal
    seeds covers far below the band."""
    rng = np.random.default_rng(7)
    reps, rho = 1_000, 0.4
    weak = 0.6 + 0.02 * rng.standard_normal((reps, 5))
    gaps = 0.15 + 0.03 * rng.standard_normal((reps, 5))
    student = weak + rho * gaps + 0.02 * rng.standard_normal((reps, 5))
    hits = 0
    for w, s, c in zip(weak, student, weak + gaps, strict=True):
        low, high = percentile_bootstrap_pgr(w, s, c, n_boot=400, seed=0)
        hits += low <= rho <= high
    assert hits / reps < 0.9
    fieller = metrics.pgr_interval(weak, student, weak + gaps)
    assert covered(fieller.low, fieller.high, rho) > 0.92

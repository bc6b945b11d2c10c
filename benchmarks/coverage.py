"""Simulated coverage of the project's 95% intervals at 3, 5 and 10 seeds.

Run: ``python benchmarks/coverage.py`` (about 20 s on 2 CPU cores). Prints one
Markdown table (pasted into docs/statistics.md): for each interval and per-seed
distribution, the share of simulated studies whose interval holds the true value.

Per-seed values are a true effect plus standardized noise: normal, gamma with
shape 4 (skewness 1) or exponential (skewness 2). PGR studies draw weak accuracy,
gap and gain per seed (gain = rho * gap + noise); the percentile bootstrap of PGR
(the project's old interval) is shown for comparison. For Fieller's interval,
"undefined" counts as not covering; its rate and the coverage among the defined
intervals are given in brackets.
"""

from __future__ import annotations

import time

import numpy as np

from probe_lab import metrics

REPS = 20_000
BOOT_REPS, N_BOOT = 2_000, 1_000
SEEDS = (3, 5, 10)


def percentile_bootstrap_pgr(w, s, c, *, n_boot: int, seed: int) -> tuple:
    """The percentile bootstrap of PGR over seeds that the project no longer
    reports, kept here as the comparison: resample seeds jointly, take the PGR of
    the resampled means, drop resamples without a gap, central 95% quantiles."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(w), size=(n_boot, len(w)))
    values = metrics.pgr(w[idx].mean(1), s[idx].mean(1), c[idx].mean(1), warn=False)
    return tuple(np.quantile(values[np.isfinite(values)], [0.025, 0.975]))


def noise(rng, kind: str, size) -> np.ndarray:
    """Mean 0, SD 1."""
    if kind == "normal":
        return rng.standard_normal(size)
    if kind == "gamma(4)":
        return (rng.gamma(4.0, 1.0, size) - 4.0) / 2.0
    return rng.exponential(1.0, size) - 1.0


def covered(low, high, truth) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def mean_rows(rng, kind: str, seeds: int) -> dict[str, str]:
    effect = 0.02
    x = effect + 0.01 * noise(rng, kind, (REPS, seeds))
    _, low, high = metrics.t_interval(x)
    shared = 0.7 + 0.05 * rng.standard_normal((REPS, seeds))
    b = shared + 0.01 * noise(rng, kind, (REPS, seeds))
    paired = metrics.paired_difference(shared + x, b)
    return {
        "t_interval (mean)": f"{covered(low, high, effect):.3f}",
        "paired_difference": f"{covered(paired.low, paired.high, effect):.3f}",
    }


def pgr_draws(rng, kind: str, seeds: int, reps: int, gap: float, rho: float):
    weak = 0.6 + 0.02 * noise(rng, kind, (reps, seeds))
    gaps = gap + 0.03 * noise(rng, kind, (reps, seeds))
    gains = rho * gaps + 0.02 * noise(rng, kind, (reps, seeds))
    return weak, weak + gains, weak + gaps


def pgr_rows(rng, kind: str, seeds: int) -> dict[str, str]:
    rho, out = 0.4, {}
    for gap, label in ((0.15, "gap 0.15"), (0.05, "gap 0.05")):
        draws = pgr_draws(rng, kind, seeds, REPS, gap, rho)
        fieller = metrics.pgr_interval(*draws)
        defined = fieller.reason == ""
        inside = covered(fieller.low[defined], fieller.high[defined], rho)
        out[f"pgr_interval, {label}: all (undefined; when defined)"] = (
            f"{covered(fieller.low, fieller.high, rho):.3f} "
            f"({1 - defined.mean():.3f}; {inside:.3f})"
        )
    weak, student, ceiling = pgr_draws(rng, kind, seeds, BOOT_REPS, 0.15, rho)
    hits = 0
    for w, s, c in zip(weak, student, ceiling, strict=True):
        low, high = percentile_bootstrap_pgr(
            w, s, c, n_boot=N_BOOT, seed=int(rng.integers(1 << 30))
        )
        hits += low <= rho <= high
    out["old: percentile bootstrap PGR, gap 0.15"] = f"{hits / BOOT_REPS:.3f}"
    return out


def main() -> None:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    table: dict[str, dict[tuple[str, int], str]] = {}
    kinds = ("normal", "gamma(4)", "exponential")
    for kind in kinds:
        for seeds in SEEDS:
            cells = mean_rows(rng, kind, seeds) | pgr_rows(rng, kind, seeds)
            for name, value in cells.items():
                table.setdefault(name, {})[(kind, seeds)] = value
    columns = [(k, s) for k in kinds for s in SEEDS]
    print("| interval (95%) | " + " | ".join(f"{k} S={s}" for k, s in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row[c] for c in columns) + " |")
    print(
        f"\n{REPS:,} simulated studies per cell ({BOOT_REPS:,} with {N_BOOT:,} "
        f"resamples for the bootstrap); {time.perf_counter() - start:.0f} s."
    )


if __name__ == "__main__":
    main()

"""What a study returns: :class:`StudyResult`, its summary, saving and loading."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from probe_lab import metrics
from probe_lab.study.config import StudyConfig

__all__ = ["ONE_SEED", "StudyResult", "failed_rows", "single_seed"]


def single_seed(seeds: int) -> str:
    """What a summary row says in place of an interval with fewer than 2 seeds
    (one rule for every summary and finding: nothing is judged on it)."""
    return ONE_SEED if seeds == 1 else "no seed left (every probe failed)"


ONE_SEED = "1 seed: no interval"
"""The interval text of a summary row with one seed."""


def failed_rows(table: pd.DataFrame) -> pd.Series:
    """``(rows,)`` bool: the rows of probes that trained to NaN or inf (a
    ``failed_epoch`` >= 0; tables saved before that column have none)."""
    if "failed_epoch" not in table:
        return pd.Series(False, index=table.index)
    return table.failed_epoch.fillna(-1) >= 0


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Tidy outputs of :func:`run_study`."""

    table: pd.DataFrame
    """One row per (supervisor, student, loss, seed)."""
    dynamics: pd.DataFrame
    """One row per (supervisor, student, loss, seed, epoch)."""
    config: StudyConfig
    fingerprints: dict[str, Any]
    """What the study read: cache paths, model names, task fingerprints, layers."""
    stages: list[dict[str, Any]]
    """Per stage: probes, rows, width, epochs, seconds, compilations."""

    @property
    def interval_covers(self) -> str:
        """What the variation over seeds includes: the data split (``resplit``)
        and the minibatch order, or the order only."""
        resplit = getattr(self.config, "resplit", False)
        return "split and minibatch order" if resplit else "minibatch order only"

    def summary(self, *, confidence: float = 0.95) -> pd.DataFrame:
        """Mean accuracies and PGR per (supervisor, student, loss), with a
        percentile bootstrap interval of PGR over seeds. ``pgr_dropped`` counts
        bootstrap resamples without a gap (left out of the interval); ``interval``
        says what the seeds vary. Probes that trained to NaN or inf (the table's
        ``failed_epoch`` >= 0) are left out; ``failed`` counts them."""
        rows = []
        keys = ["supervisor", "student", "loss"]
        covers = f"{confidence:.0%} bootstrap over seeds ({self.interval_covers})"
        for key, every in self.table.groupby(keys, sort=False):
            failed = failed_rows(every)
            group = every[~failed]
            accs = (group.weak_acc, group.student_acc, group.ceiling_acc)
            low = high = float("nan")
            dropped = 0
            if len(group):  # every seed failed: nothing to report
                _, dropped = metrics.bootstrap_pgr_samples(*accs)
                with warnings.catch_warnings():  # the count is a column here
                    warnings.simplefilter("ignore", metrics.PGRWarning)
                    low, high = metrics.bootstrap_pgr(*accs, confidence=confidence)
            point = metrics.pgr(
                group.weak_acc.mean(),
                group.student_acc.mean(),
                group.ceiling_acc.mean(),
                warn=False,
            )
            rows.append(
                dict(
                    zip(keys, key, strict=True),
                    kind=every.kind.iloc[0],
                    seeds=len(group),
                    failed=int(failed.sum()),
                    weak_acc=group.weak_acc.mean(),
                    student_acc=group.student_acc.mean(),
                    ceiling_acc=group.ceiling_acc.mean(),
                    pgr=float(point),
                    pgr_low=low,
                    pgr_high=high,
                    pgr_dropped=dropped,
                    interval=covers if len(group) > 1 else single_seed(len(group)),
                    agreement=group.agreement.mean(),
                    agreement_weak_wrong=group.agreement_weak_wrong.mean(),
                    agreement_weak_right=group.agreement_weak_right.mean(),
                )
            )
        return pd.DataFrame(rows)

    @property
    def failed(self) -> pd.DataFrame:
        """The table's rows of probes that trained to NaN or inf."""
        return self.table[failed_rows(self.table)]

    def save(self, out: str | Path) -> Path:
        """Write the table and dynamics (Parquet if pyarrow is installed, else CSV),
        the summary, the resolved config, the cache fingerprints and the stages'
        records into ``out``. Figures are the caller's (a study returns data):
        ``probe_lab.plots.plot_gain_vs_misfit(result.table)`` draws gain against
        misfit."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in (("table", self.table), ("dynamics", self.dynamics)):
            try:
                frame.to_parquet(out / f"{name}.parquet", index=False)
            except ImportError:
                frame.to_csv(out / f"{name}.csv", index=False)
        self.summary().to_csv(out / "summary.csv", index=False)
        (out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        (out / "fingerprints.json").write_text(
            json.dumps(self.fingerprints, indent=2, default=str)
        )
        (out / "stages.json").write_text(json.dumps(self.stages, indent=2))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> StudyResult:
        """Read back a study that :meth:`save` wrote into ``folder``: table,
        dynamics, config, fingerprints and stages."""
        folder = Path(folder)
        frames = {}
        for name in ("table", "dynamics"):
            parquet = folder / f"{name}.parquet"
            frames[name] = (
                pd.read_parquet(parquet)
                if parquet.is_file()
                else pd.read_csv(folder / f"{name}.csv")
            )

        def read(name: str) -> Any:
            return json.loads((folder / name).read_text())

        return cls(
            table=frames["table"],
            dynamics=frames["dynamics"],
            config=StudyConfig.from_dict(read("config.json")),
            fingerprints=read("fingerprints.json"),
            stages=read("stages.json"),
        )

    def misfit_fit(self) -> dict[str, float]:
        """Gain against misfit over the study's conditions (means over seeds):
        correlation, slope, intercept and the share with gain >= misfit
        (:func:`probe_lab.metrics.misfit_fit`)."""
        keys = ["supervisor", "student", "loss"]
        means = self.table.groupby(keys, sort=False)[["gain", "misfit"]].mean()
        return metrics.misfit_fit(means.gain, means.misfit)

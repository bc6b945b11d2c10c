"""What a study returns: :class:`StudyResult`, its summary, saving and loading."""

from __future__ import annotations

import dataclasses
import json
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
    """One row per (supervisor, student, loss, seed): accuracies (``weak_acc``, the
    supervisor's test accuracy for every kind; ``student_acc`` at the early-stopping
    epoch; ``ceiling_acc``), agreements, ``pgr``; ``n_test``; per-row metrics on the
    test rows (``correction``, ``corruption``, ``auroc``, ``ece``); early-stopping
    sensitivity (``student_acc_final`` at the last epoch, ``student_acc_best_test``
    the best test epoch: an upper bound); the misfit theorem in squared loss
    (``weak_probs``, ``sq_gain_fit`` / ``_test``, ``sq_misfit_*``, ``sq_slack_*`` of
    the projection student, ``student_sq_gain_test``, ``student_sq_misfit_test``).
    Each column: docs/statistics.md, "Study table columns"."""
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
        """Mean accuracies and PGR per (supervisor, student, loss), with Fieller's
        interval of PGR over seeds (:func:`probe_lab.metrics.pgr_interval`, paired
        within each seed; nothing is resampled or dropped).

        ``pgr`` is ``mean(student - weak) / mean(ceiling - weak)`` (the paper's PGR
        of averaged accuracies); ``pgr_low`` / ``pgr_high`` its interval, NaN with
        ``pgr_note`` saying why where it is undefined ("PGR undefined at this
        precision" where the gap's own t-interval includes 0); ``interval`` says
        what the seeds vary. Probes that trained to NaN or inf (the table's
        ``failed_epoch`` >= 0) are left out; ``failed`` counts them.
        """
        rows = []
        keys = ["supervisor", "student", "loss"]
        covers = f"{confidence:.0%} Fieller over seeds ({self.interval_covers})"
        for key, every in self.table.groupby(keys, sort=False):
            failed = failed_rows(every)
            group = every[~failed]
            accs = (group.weak_acc, group.student_acc, group.ceiling_acc)
            fit = metrics.pgr_interval(*accs, confidence=confidence)
            rows.append(
                dict(
                    zip(keys, key, strict=True),
                    kind=every.kind.iloc[0],
                    seeds=len(group),
                    failed=int(failed.sum()),
                    weak_acc=group.weak_acc.mean(),
                    student_acc=group.student_acc.mean(),
                    ceiling_acc=group.ceiling_acc.mean(),
                    pgr=float(fit.pgr),
                    pgr_low=float(fit.low),
                    pgr_high=float(fit.high),
                    pgr_note=str(fit.reason),
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

    def cell_warnings(self, *, confidence: float = 0.95) -> list[str]:
        """One line per (supervisor, student k) whose supervisor is within noise of
        chance or of the ceiling, by :func:`probe_lab.leaderboard.cell_rule`'s rule
        (the weak accuracy's t-interval must clear 0.5 and, with ``n_test`` test
        rows, by two binomial standard errors; the gap ``ceiling - weak`` must have
        a t-interval above 0, be at least 0.02 and exceed two standard errors of
        the two test accuracies). PGR in such a cell says nothing. Empty with one
        seed (no interval), and for a table without the columns the rule reads."""
        from probe_lab import leaderboard

        table = self.table
        need = {"supervisor", "student", "seed", "weak_acc", "ceiling_acc"}
        if not need <= set(table) or table.seed.nunique() < 2:
            return []
        cells = leaderboard.cell_rule(table, confidence=confidence)
        return [
            f"warning: supervisor {row.supervisor} (student k = {row.student}): "
            f"{row.excluded} (weak accuracy {row.weak_acc:.3f}, ceiling - weak "
            f"{row.gap:+.3f}); its PGR says nothing at this precision"
            for row in cells[~cells.kept].itertuples()
        ]

    def save(self, out: str | Path) -> Path:
        """Write the table and dynamics (Parquet if pyarrow is installed, else CSV),
        the summary, the resolved config, the cache fingerprints and the stages'
        records into ``out``. Figures are the caller's (a study returns data):
        ``probe_lab.plots.plot_misfit_theorem(result.table)`` draws the
        squared-loss misfit test."""
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
        """The misfit theorem's test over the study's conditions: the projection
        student's squared-loss gain against its squared-loss misfit on the
        held-out test rows (means over seeds per supervisor and student k;
        columns ``sq_gain_test`` and ``sq_misfit_test``): ``n``, correlation,
        slope, intercept and ``share_above`` (share with gain >= misfit), from
        :func:`probe_lab.metrics.misfit_fit`; plus ``mean_slack_test`` and
        ``mean_slack_fit`` (``gain - misfit`` on test and on the fitted rows,
        where it is an identity up to the target's misfit from the student
        class)."""
        keys = ["supervisor", "student"]
        columns = ["sq_gain_test", "sq_misfit_test", "sq_slack_test", "sq_slack_fit"]
        missing = [c for c in columns if c not in self.table]
        if missing:
            raise ValueError(
                f"the study table has no {', '.join(missing)}: it was saved by an "
                f"older probe-lab; re-run the study to get the squared-loss test"
            )
        means = self.table.groupby(keys, sort=False)[columns].mean()
        out = metrics.misfit_fit(means.sq_gain_test, means.sq_misfit_test)
        out["mean_slack_test"] = float(means.sq_slack_test.mean())
        out["mean_slack_fit"] = float(means.sq_slack_fit.mean())
        return out

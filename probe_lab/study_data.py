"""What a study reads: caches joined by example id, features in the study's basis,
and the weak / student / test splits of every seed.

Splits follow Appendix E.1's proportions: a test split (``test_frac``); of the rest,
``weak_frac`` (10k of 23k in the paper) trains weak supervisors and the remainder is
labelled by them for the students; ``val_frac`` of each training split is held out
for early stopping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from probe_lab.basis import to_basis
from probe_lab.supervisors import StudyError, WeakProbe

__all__ = ["SPLITS", "StudyData", "load_study_data", "make_splits"]

SPLITS = ("test", "weak_train", "weak_val", "student_train", "student_val")

Source = tuple[str | None, int | None]  # (cache, layer); (None, None): the study's


@dataclasses.dataclass
class StudyData:
    """A study's rows (the main cache's, restricted to ids every cache holds)."""

    truth: np.ndarray  # (n,) int8
    n_chars: np.ndarray  # (n,)
    ids: np.ndarray  # (n,)
    sources: dict[Source, np.ndarray]  # (n, d) features per source, in the basis
    splits: dict[str, np.ndarray]  # name -> (S, n) bool
    fingerprints: dict[str, Any]
    caches: dict[str | None, Any]  # opened caches by path (None: the main one)
    lookup: dict[str | None, np.ndarray]  # each cache's row of every study row

    @property
    def n(self) -> int:
        return int(self.truth.size)

    @property
    def basis_rows(self) -> np.ndarray:
        """The main cache's rows the basis was fit on (seed 0's training rows)."""
        fit = self.splits["weak_train"][0] | self.splits["student_train"][0]
        return self.lookup[None][fit]

    @property
    def features(self) -> np.ndarray:
        """``(n, d)`` the study's own features (students and ceilings)."""
        return self.sources[(None, None)]

    def field(self, cache: str | None, name: str, *, who: str = "") -> np.ndarray:
        """An extra field of a cache, ``(n,)``, aligned with the study's rows."""
        opened = self.caches[cache]
        if name not in opened.extra:
            raise StudyError(
                f"{who + ': ' if who else ''}{opened.path} has no extra field "
                f"{name!r}; its fields: {sorted(opened.extra)}"
            )
        return np.asarray(opened.extra[name])[self.lookup[cache]]


def make_splits(
    n: int,
    seeds: int,
    *,
    test_frac: float,
    weak_frac: float,
    val_frac: float,
    resplit: bool,
) -> dict[str, np.ndarray]:
    """The :data:`SPLITS` of every seed as ``(seeds, n)`` bool masks.

    Seed ``s`` permutes the rows with ``default_rng(s)`` (``resplit``) or every
    seed uses ``default_rng(0)``'s permutation.
    """
    out = {name: np.zeros((seeds, n), bool) for name in SPLITS}
    for seed in range(seeds):
        order = np.random.default_rng(seed if resplit else 0).permutation(n)
        n_test = int(round(test_frac * n))
        n_weak = int(round(weak_frac * (n - n_test)))
        test, weak, student = np.split(order, [n_test, n_test + n_weak])
        n_wval = int(round(val_frac * weak.size))
        n_sval = int(round(val_frac * student.size))
        parts = dict(
            test=test,
            weak_val=weak[:n_wval],
            weak_train=weak[n_wval:],
            student_val=student[:n_sval],
            student_train=student[n_sval:],
        )
        for name, idx in parts.items():
            out[name][seed, idx] = True
    return out


def check_splits(splits: dict[str, np.ndarray], truth: np.ndarray, batch: int) -> None:
    """Refuse splits with one class only, or training splits below one batch."""
    for name, mask in splits.items():
        if not (name.endswith("train") or name == "test"):
            continue
        for seed, rows in enumerate(mask):
            labels = truth[rows]
            if labels.size and labels.min() == labels.max():
                raise StudyError(
                    f"the {name} split of seed {seed} holds only label {labels[0]}: "
                    f"the task needs both classes in every split"
                )
    for name in SPLITS:
        smallest = int(splits[name].sum(axis=1).min())
        need = batch if name.endswith("train") else 1
        if smallest < need:
            raise StudyError(
                f"the {name} split has only {smallest} rows"
                + (f", fewer than the batch size {batch}" if need > 1 else "")
                + ": use more rows (a larger task or max_rows), other split "
                "fractions, or a smaller batch_size"
            )


def load_study_data(
    config: Any, probes: Iterable[WeakProbe], other_caches: Iterable[str]
) -> StudyData:
    """Open and join the caches, split the rows and load every feature source.

    Args:
        config: the :class:`~probe_lab.study.StudyConfig`.
        probes: every ground-truth probe of stage 1 (their feature sources load).
        other_caches: further caches the supervisors read (joined by id).

    Returns:
        The study's :class:`StudyData`.
    """
    from activation_cache import join, open_cache

    main = open_cache(config.cache)
    probes = list(probes)
    paths = dict.fromkeys([*(p.cache for p in probes if p.cache), *other_caches])
    rows = np.arange(main.n)
    caches: dict[str | None, Any] = {None: main}
    maps: dict[str, dict[int, int]] = {}
    for path in paths:
        caches[path] = open_cache(path)
        ia, ib = join(main, caches[path])
        maps[path] = dict(zip(ia.tolist(), ib.tolist(), strict=True))
        rows = np.array([r for r in rows if r in maps[path]], np.int64)
    if config.max_rows is not None and config.max_rows < rows.size:
        keep = np.random.default_rng(12345).choice(rows.size, config.max_rows, False)
        rows = rows[np.sort(keep)]
    lookup = {None: rows} | {
        path: np.array([m[r] for r in rows], np.int64) for path, m in maps.items()
    }
    truth = np.asarray(main.labels, np.int8)[rows]
    splits = make_splits(
        rows.size,
        config.seeds,
        test_frac=config.test_frac,
        weak_frac=config.weak_frac,
        val_frac=config.val_frac,
        resplit=config.resplit,
    )
    check_splits(splits, truth, config.train.batch_size)
    fit_rows = splits["weak_train"][0] | splits["student_train"][0]
    data = StudyData(
        truth=truth,
        n_chars=np.asarray(main.n_chars)[rows],
        ids=np.asarray(main.ids)[rows],
        sources={},
        splits=splits,
        fingerprints={"rows": int(rows.size)},
        caches=caches,
        lookup=lookup,
    )
    sources = [(None, None)] + [p.source for p in probes if p.source != (None, None)]
    for source in dict.fromkeys(sources):
        cache, layer = source
        opened = caches[cache]
        layer = config.layer if layer is None else layer
        x = opened.features(layer)[lookup[cache]]
        data.sources[source] = to_basis(x, config.basis, fit_rows, whiten=config.whiten)
        data.fingerprints[f"{opened.path}#layer{layer}"] = dict(
            model=opened.meta.get("model"),
            task=opened.meta.get("task"),
            task_fingerprint=opened.fingerprint,
            layer=int(layer),
            shape=list(x.shape),
        )
    return data

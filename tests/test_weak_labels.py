"""Matched-accuracy weak-label makers hit their target and flip what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from probe_lab.supervisors.synthetic import (
    MAKERS,
    make_weak_labels,
    mixture_labels,
    n_flips,
)


@pytest.fixture
def rows_and_truth():
    rng = np.random.default_rng(0)
    n = 500
    truth = (rng.random(n) < 0.5).astype(np.int8)
    rows = np.sort(rng.choice(n, 333, replace=False))
    n_chars = rng.integers(5, 100, n)
    logits = rng.normal(scale=3, size=n)
    return truth, rows, n_chars, logits


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("accuracy", [0.6, 0.75, 0.9, 1.0])
def test_makers_hit_the_target_accuracy_exactly(rows_and_truth, kind, accuracy):
    truth, rows, n_chars, logits = rows_and_truth
    labels = make_weak_labels(
        kind,
        truth,
        rows,
        accuracy,
        np.random.default_rng(1),
        n_chars=n_chars,
        strong_logits=logits,
    )
    wrong = labels != truth
    assert wrong.sum() == n_flips(accuracy, rows.size) == round((1 - accuracy) * 333)
    assert not wrong[np.setdiff1d(np.arange(truth.size), rows)].any()


def test_each_structure_flips_the_rows_it_claims(rows_and_truth):
    truth, rows, n_chars, logits = rows_and_truth

    def flipped(kind):
        labels = make_weak_labels(
            kind,
            truth,
            rows,
            0.8,
            np.random.default_rng(2),
            n_chars=n_chars,
            strong_logits=logits,
        )
        wrong = np.zeros(truth.size, bool)
        wrong[rows] = labels[rows] != truth[rows]
        kept = np.zeros(truth.size, bool)
        kept[rows] = ~wrong[rows]
        return wrong, kept

    wrong, kept = flipped("longest")
    assert n_chars[wrong].min() >= n_chars[kept].max()
    wrong, kept = flipped("shortest")
    assert n_chars[wrong].max() <= n_chars[kept].min()
    wrong, kept = flipped("strong_unconfident")
    assert np.abs(logits[wrong]).max() <= np.abs(logits[kept]).min()
    margin = logits * (2.0 * truth - 1)
    wrong, kept = flipped("strong_confident_correct")
    assert margin[wrong].min() >= margin[kept].max()
    assert (margin[wrong] > 0).all()  # these rows were confidently correct
    wrong_a, _ = flipped("random")
    wrong_b, _ = flipped("random")
    np.testing.assert_array_equal(wrong_a, wrong_b)  # seeded


@pytest.mark.parametrize("level", [0.0, 0.3, 1.0])
def test_mixture_mixes_own_errors_and_random_flips(rows_and_truth, level):
    truth, rows, _, _ = rows_and_truth
    rng = np.random.default_rng(3)
    simulatable = truth.copy()
    own = rng.choice(rows, 100, replace=False)
    simulatable[own] = 1 - simulatable[own]  # the M_k's own errors (acc 0.7)
    labels = mixture_labels(truth, simulatable, rows, 0.75, level, rng)
    wrong = np.flatnonzero(labels != truth)
    total = n_flips(0.75, rows.size)
    assert wrong.size == total
    n_random = round(level * total)
    assert np.isin(wrong, own).sum() == total - n_random
    if level == 0.0:
        assert np.isin(wrong, own).all()


def test_bad_targets_are_refused(rows_and_truth):
    truth, rows, _, _ = rows_and_truth
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"must lie in \(0.5, 1\]"):
        make_weak_labels("random", truth, rows, 0.4, rng)
    with pytest.raises(ValueError, match="unknown weak-label structure"):
        make_weak_labels("sideways", truth, rows, 0.8, rng)
    with pytest.raises(ValueError, match="need prompt lengths"):
        make_weak_labels("longest", truth, rows, 0.8, rng)
    with pytest.raises(ValueError, match="makes only 0"):
        mixture_labels(truth, truth, rows, 0.8, 0.0, rng)

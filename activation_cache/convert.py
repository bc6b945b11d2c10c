"""Turn the ladder's packaged weights into model folders ``transformers`` loads.

Three one-off preparations (see `activation_cache.models`), each writing a folder:

- `onnx_to_bert`: a BERT exported to ONNX (paraphrase-MiniLM-L3-v2) back to a BERT
  state dict. Biases and layer norms keep their module names in the graph; each
  ``MatMul`` node is named after its module (``.../query/MatMul``) and multiplies by
  the transposed weight, so the weight is that initializer transposed.
- `join_zip_parts`: a zip split into numbered parts (all-mpnet-base-v2), joined in
  order and unpacked.
- `dequantize_gguf`: a GGUF checkpoint (SmolLM2, 4-bit) loaded and dequantized by
  ``transformers``, rebuilt from its config without the GGUF settings (a GGUF-loaded
  model refuses ``save_pretrained``), and saved in float32.

torch, transformers, onnx and gguf are imported inside the functions.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "BERT_TOKENIZER_FILES",
    "bert_config",
    "dequantize_gguf",
    "join_zip_parts",
    "onnx_bert_state_dict",
    "onnx_to_bert",
]

# The WordPiece tokenizer files a BERT folder needs (copied from a model with the
# same vocabulary).
BERT_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
_PREFIX = "model.0.auto_model."  # sentence-transformers' name for the BERT inside


def onnx_bert_state_dict(onnx_path: Path) -> tuple[dict[str, np.ndarray], float]:
    """Read a sentence-transformers BERT's weights out of its ONNX graph.

    Args:
        onnx_path: the ``.onnx`` file.

    Returns:
        (BERT state dict as float32 arrays with ``BertModel``'s names, the layer
        norms' epsilon).

    Raises:
        ValueError: if a ``MatMul`` weight has no module name, or a weight is
            missing, so the graph is not a BERT exported by sentence-transformers.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {
        name[len(_PREFIX) :]: np.array(a, dtype=np.float32)
        for name, a in arrays.items()
        if name.startswith(_PREFIX)
    }
    eps = []
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            eps += [a.f for a in node.attribute if a.name == "epsilon"]
        if node.op_type != "MatMul" or node.input[1] not in arrays:
            continue
        path = node.name.strip("/").split("/")
        if path[-1] != "MatMul" or "auto_model" not in path:
            raise ValueError(f"MatMul node {node.name!r} does not name its module")
        module = ".".join(path[path.index("auto_model") + 1 : -1])
        state[f"{module}.weight"] = np.ascontiguousarray(
            arrays[node.input[1]].T, np.float32
        )
    if "embeddings.word_embeddings.weight" not in state or len(set(eps)) != 1:
        raise ValueError(f"{onnx_path} is not a sentence-transformers BERT graph")
    return state, float(eps[0])


def bert_config(state: dict[str, np.ndarray], eps: float, heads: int) -> dict:
    """A ``BertConfig`` dict that fits a BERT state dict's shapes."""
    vocab, d = state["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(
        int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")
    )
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": int(d),
        "intermediate_size": int(
            state["encoder.layer.0.intermediate.dense.weight"].shape[0]
        ),
        "layer_norm_eps": eps,
        "max_position_embeddings": int(
            state["embeddings.position_embeddings.weight"].shape[0]
        ),
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": int(
            state["embeddings.token_type_embeddings.weight"].shape[0]
        ),
        "vocab_size": int(vocab),
    }


def onnx_to_bert(
    onnx_path: Path, tokenizer_folder: Path, out: Path, *, heads: int
) -> None:
    """Write a ``BertModel`` folder (safetensors, config, tokenizer) from ONNX.

    Args:
        onnx_path: the sentence-transformers BERT graph.
        tokenizer_folder: a folder holding `BERT_TOKENIZER_FILES` of the same
            vocabulary.
        out: the folder to write (created).
        heads: attention heads (not recoverable from the weights' shapes).
    """
    import torch
    from safetensors.torch import save_file

    state, eps = onnx_bert_state_dict(onnx_path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(state[k]) for k in sorted(state)}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = bert_config(state, eps, heads)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name in BERT_TOKENIZER_FILES:
        shutil.copyfile(tokenizer_folder / name, out / name)


def join_zip_parts(parts: Sequence[Path], out: Path, *, member: str) -> None:
    """Join a split zip's parts in order and unpack one folder of it into ``out``.

    Args:
        parts: the parts, in order (``.zip.001``, ``.zip.002``, ...).
        out: the folder to write (created); the files of ``member`` land directly
            in it.
        member: the folder inside the zip to unpack (e.g. ``all-mpnet-base-v2/``).
    """
    out.mkdir(parents=True, exist_ok=True)
    joined = out / ".joined.zip"
    with joined.open("wb") as f:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, f, length=1 << 24)
    with zipfile.ZipFile(joined) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(member):
                continue
            rel = Path(name[len(member) :])
            if rel.name == "desktop.ini" or ".." in rel.parts or rel.is_absolute():
                continue
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, (out / rel).open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 24)
    joined.unlink()


def dequantize_gguf(gguf_path: Path, out: Path) -> None:
    """Write a float32 model folder (safetensors, config, tokenizer) from a GGUF file.

    Args:
        gguf_path: the ``.gguf`` file (its folder is read by ``transformers``).
        out: the folder to write (created).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModel.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(loaded.config).from_dict(settings)
    model = AutoModel.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)

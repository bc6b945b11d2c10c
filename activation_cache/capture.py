"""Read the requested layers of the residual stream with forward hooks, pooled on the
device as the forward passes them, and skip the forward after the deepest one.

The layer convention is ``hidden_states``'s: index 0 is the embedding output and
index i the output of block i. Layer i < n_blocks is read as the input of block i (the
same tensor: nothing runs between blocks), through a forward pre-hook, so stopping
after layer i means raising in block i's pre-hook, before block i (or any offloaded
weight it would load) runs. Layer n_blocks is what ``hidden_states[-1]`` holds, which
recent transformers replace by the final norm's output: the model's
``last_hidden_state`` (or, for models that keep it, the last block's output).

torch is imported inside the functions, like the rest of extraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BLOCK_PATHS",
    "POOLING",
    "BlocksNotFoundError",
    "CaptureMismatchError",
    "HiddenStatesCapture",
    "LayerCapture",
    "check_capture",
    "find_blocks",
    "forward_hidden_states",
    "pool",
]

# Where each architecture family keeps its list of transformer blocks, searched in
# order (attribute paths from the model AutoModel loads).
BLOCK_PATHS = (
    ("BERT-like", "encoder.layer"),
    ("GPT-2", "h"),
    ("Llama-like, GPT-NeoX", "layers"),
    ("DistilBERT", "transformer.layer"),
    ("OPT", "decoder.layers"),
    ("wrapped GPT-2", "transformer.h"),
    ("wrapped Llama-like", "model.layers"),
    ("wrapped GPT-NeoX", "gpt_neox.layers"),
)


# What each pooled position means, stated in every cache's ``pooling`` attribute.
# The mask locates the real tokens, so right and left padding pool alike.
POOLING = {
    "last": "the last real token of each prompt, found by the attention mask (right "
    "or left padding alike): for a decoder the one token that has read the whole "
    "prompt",
    "mean": "the mean over each prompt's real tokens (padding excluded by the "
    "attention mask; special tokens the tokenizer adds, such as [CLS] or <bos>, "
    "included)",
    "first": "the first real token of each prompt, found by the attention mask: "
    "[CLS] for a BERT-like encoder; for a decoder a token that has read only itself",
}


class BlocksNotFoundError(RuntimeError):
    """A model whose block list is at none of the known paths."""


class CaptureMismatchError(RuntimeError):
    """Hooks that read a layer differently from ``output_hidden_states``."""


class _Stop(Exception):
    """Raised by the hook on the block after the deepest requested layer."""


def find_blocks(model, n_blocks: int) -> tuple[str, Any]:
    """Find a model's list of transformer blocks.

    Args:
        model: a transformers model (the one ``AutoModel`` loads).
        n_blocks: the config's ``num_hidden_layers``.

    Returns:
        (attribute path, the ``torch.nn.ModuleList`` of ``n_blocks`` blocks).

    Raises:
        BlocksNotFoundError naming the model class and the paths searched.
    """
    import torch

    for _, path in BLOCK_PATHS:
        found = model
        for part in path.split("."):
            found = getattr(found, part, None)
        if isinstance(found, torch.nn.ModuleList) and len(found) == n_blocks:
            return path, found
    searched = ", ".join(f"{path} ({family})" for family, path in BLOCK_PATHS)
    raise BlocksNotFoundError(
        f"cannot find the {n_blocks} transformer blocks of {type(model).__name__}: "
        f"no ModuleList of {n_blocks} modules at {searched}. Extract it with "
        "--capture hidden_states (ExtractConfig(capture='hidden_states')), which "
        "keeps every hidden state and runs the whole forward"
    )


def pool(hidden, mask, position: str):
    """Pool one layer's states at a token position, in float32.

    Args:
        hidden: (B, T, d) states.
        mask: (B, T) attention mask, 1 on real tokens (on any device).
        position: ``last`` or ``first`` real token, or ``mean`` over real tokens.

    Returns:
        (B, d) float32 on ``hidden``'s device.
    """
    import torch

    hidden = hidden.float()
    mask = mask.to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if position == "mean":
        real = mask.bool().unsqueeze(-1)
        total = torch.where(real, hidden, torch.zeros((), device=hidden.device)).sum(1)
        return total / mask.sum(1, keepdim=True).to(hidden.dtype)
    if position == "first":
        return hidden[rows, mask.argmax(1)]
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
    return hidden[rows, last]


def _state(output):
    """The hidden states in a block's output (a tensor, or a tuple led by one)."""
    return output[0] if isinstance(output, tuple | list) else output


class LayerCapture:
    """Forward hooks that pool the requested layers during one forward pass.

    Use as a context manager (the hooks are removed on exit); each call runs the
    model on one batch and returns the pooled layers. The hooks act only inside a
    call, so other forward passes of the model meanwhile run as usual. They are
    plain torch hooks, so they work the same under accelerate's device-map hooks:
    each layer is pooled on the device its block ran on.

    Args:
        model: a transformers model in eval mode.
        blocks: its block list (see `find_blocks`).
        layers: sorted hidden_states indices to read (0..len(blocks)).
        position: pooled token position (see `pool`).
        final: how layer ``len(blocks)`` is read: ``"output"`` (the model's
            ``last_hidden_state``) or ``"block"`` (the last block's output).
    """

    def __init__(
        self, model, blocks, layers: Sequence[int], position: str, *, final: str
    ):
        self.model, self.blocks, self.position = model, blocks, position
        self.layers = list(layers)
        self.n_blocks = len(blocks)
        self.final = final
        self.deepest = max(self.layers)
        self._mask = None
        self._pooled: dict[int, Any] = {}
        self._handles: list = []

    def __enter__(self) -> LayerCapture:
        for layer in self.layers:
            if layer < self.n_blocks:
                self._handles.append(
                    self.blocks[layer].register_forward_pre_hook(
                        self._pre_hook(layer), with_kwargs=True
                    )
                )
        if self.deepest == self.n_blocks and self.final == "block":
            self._handles.append(
                self.blocks[-1].register_forward_hook(self._last_block_hook)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _pre_hook(self, layer: int):
        stop = layer == self.deepest

        def hook(module, args, kwargs):
            if self._mask is None:
                return
            hidden = args[0] if args else kwargs["hidden_states"]
            self._pooled[layer] = pool(hidden, self._mask, self.position)
            if stop:
                raise _Stop

        return hook

    def _last_block_hook(self, module, args, output) -> None:
        if self._mask is not None:
            self._pooled[self.n_blocks] = pool(
                _state(output), self._mask, self.position
            )

    @property
    def blocks_run(self) -> int:
        """Blocks each forward runs (all of them when the last layer is read)."""
        return self.deepest

    def __call__(self, inputs: dict) -> list:
        """Run the model on one batch.

        Args:
            inputs: the model's keyword inputs, with ``attention_mask``.

        Returns:
            One (B, d) float32 tensor per requested layer, in ``layers`` order, each
            on the device that computed it.
        """
        mask = inputs["attention_mask"]
        self._mask, self._pooled = mask, {}
        try:
            output = self.model(**inputs)
        except _Stop:
            output = None
        finally:
            pooled, self._pooled, self._mask = self._pooled, {}, None
        if self.deepest == self.n_blocks and self.final == "output":
            last = getattr(output, "last_hidden_state", None)
            if last is None:
                last = output[0]
            pooled[self.n_blocks] = pool(last, mask, self.position)
        return [pooled[layer] for layer in self.layers]


class HiddenStatesCapture:
    """The straight computation: run the whole forward with ``output_hidden_states``
    and pool the requested layers afterwards (every layer's states are kept until
    then). A drop-in for `LayerCapture` where no block list is known.

    Args:
        model: a transformers model in eval mode.
        layers: sorted hidden_states indices to read.
        position: pooled token position (see `pool`).
        n_blocks: the model's block count.
    """

    def __init__(self, model, layers: Sequence[int], position: str, n_blocks: int):
        self.model, self.layers, self.position = model, list(layers), position
        self.blocks_run = n_blocks

    def __enter__(self) -> HiddenStatesCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, inputs: dict) -> list:
        """Run the model on one batch; see `LayerCapture.__call__`."""
        states = self.model(**inputs, output_hidden_states=True).hidden_states
        mask = inputs["attention_mask"]
        return [pool(states[layer], mask, self.position) for layer in self.layers]


def forward_hidden_states(model, blocks, inputs: dict) -> tuple[tuple, str | None]:
    """Run the model keeping every hidden state, and say where the last one comes from.

    Args:
        model: a transformers model in eval mode.
        blocks: its block list.
        inputs: one batch of keyword inputs.

    Returns:
        (``hidden_states``: n_blocks + 1 tensors (B, T, d), the ``final`` source of
        the last one for `LayerCapture`: ``"output"`` if it is the model's
        ``last_hidden_state``, ``"block"`` if it is the last block's output, None if
        neither).
    """
    import torch

    seen = {}

    def hook(module, args, output):
        seen["block"] = _state(output)

    handle = blocks[-1].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            output = model(**inputs, output_hidden_states=True)
    finally:
        handle.remove()
    hidden = tuple(output.hidden_states)
    last = getattr(output, "last_hidden_state", None)
    if last is not None and torch.equal(hidden[-1], last):
        return hidden, "output"
    if torch.equal(hidden[-1], seen["block"]):
        return hidden, "block"
    return hidden, None


def check_capture(capture: LayerCapture, inputs: dict, hidden: Sequence) -> None:
    """Check that the hooks read every requested layer as ``hidden_states`` holds it.

    Args:
        capture: the hooks, entered.
        inputs: one batch.
        hidden: that batch's ``hidden_states`` (see `forward_hidden_states`).

    Raises:
        CaptureMismatchError naming the first layer read differently.
    """
    import torch

    with torch.inference_mode():
        got = capture(inputs)
        for layer, x in zip(capture.layers, got, strict=True):
            want = pool(hidden[layer], inputs["attention_mask"], capture.position)
            x = x.to(want.device)
            scale = float(want.abs().max()) + 1.0
            err = float((x - want).abs().max())
            if not err <= 1e-4 * scale:
                raise CaptureMismatchError(
                    f"the forward hooks on {type(capture.model).__name__}'s blocks "
                    f"read layer {layer} differently from output_hidden_states "
                    f"(largest difference {err:.3g}); extract it with --capture "
                    "hidden_states (ExtractConfig(capture='hidden_states'))"
                )

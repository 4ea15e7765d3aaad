"""Loading checkpoints into the video models: one entry point, :func:`load_video_weights`.

It reads a local file or directory -- a checkpoint of these video models (an Accelerate
``save_state`` directory, a ``best/`` directory, ``model.safetensors``, ``pytorch_model.bin``),
a checkpoint written by the official ATM code (DeepSpeed's ``mp_rank_00_model_states.pt``
with the model under ``module``, or that state dict alone), or an image-backbone checkpoint
(timm / open_clip, OpenAI CLIP including its TorchScript ``ViT-B-16.pt``, EVA-CLIP). Image
backbones go through timm's own filter function, their CLIP projection (timm's ``head``) into
``model.proj``; the official layout goes through :data:`OFFICIAL_NAMES`. Parameters a
checkpoint does not cover (ATM, temporal modules, classifier of an image backbone) keep their
initialisation and are reported, unless ``strict`` asks for every tensor.
"""
from __future__ import annotations

import argparse
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn as nn
from timm.models import clean_state_dict

from ..ops import OPS

_logger = logging.getLogger(__name__)

# the official script saves DeepSpeed's model as "module" beside its EMA in "model_ema"
_CONTAINER_KEYS = ("state_dict", "model", "module", "model_ema")
_SHOWN = 8  # names listed per category in messages


@dataclass
class LoadReport:
    """What a checkpoint filled in a model: ``loaded`` and ``new`` are model parameter/buffer
    names, ``ignored`` are checkpoint keys the model has no place for."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    layout: str = "video model"  # "video model", "official ATM" or "image backbone"
    derived: list[str] = field(default_factory=list)  # checkpoint buffers the model recomputes

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source} ({self.layout} layout)"]
        if self.derived:
            lines.append(f"recomputed, not loaded ({len(self.derived)}): {_shorten(self.derived, _SHOWN)}")
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
        with torch.serialization.safe_globals([argparse.Namespace]):  # the official script's saved arguments
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


# ---------------------------------------------------------------- the official code's layout
#
# The official training script (whwu95/ATM, run_class_finetuning.py) saves ``VideoCLIP``:
# ``visual`` (the CLIP / EVA-CLIP image tower whose blocks carry T1D as ``control_point1`` /
# ``control_point2`` and ATM as ``control_point_c``) and ``fc`` (the classifier). Each row maps one
# of our key prefixes to the official one; ``{i}`` is a block index. Keys are complete names or,
# ending in ".", prefixes whose remainder is kept.

_CLIP_NAMES: tuple[tuple[str, str], ...] = (
    ("backbone.cls_token", "visual.class_embedding"),
    ("backbone.pos_embed", "visual.positional_embedding"),
    ("backbone.patch_embed.proj.weight", "visual.conv1.weight"),
    ("backbone.norm_pre.", "visual.ln_pre."),
    ("backbone.norm.", "visual.ln_post."),
    ("proj.weight", "visual.proj"),
    ("backbone.blocks.{i}.attn.qkv.weight", "visual.transformer.resblocks.{i}.attn.in_proj_weight"),
    ("backbone.blocks.{i}.attn.qkv.bias", "visual.transformer.resblocks.{i}.attn.in_proj_bias"),
    ("backbone.blocks.{i}.attn.proj.", "visual.transformer.resblocks.{i}.attn.out_proj."),
    ("backbone.blocks.{i}.norm1.", "visual.transformer.resblocks.{i}.ln_1."),
    ("backbone.blocks.{i}.norm2.", "visual.transformer.resblocks.{i}.ln_2."),
    ("backbone.blocks.{i}.mlp.fc1.", "visual.transformer.resblocks.{i}.mlp.c_fc."),
    ("backbone.blocks.{i}.mlp.fc2.", "visual.transformer.resblocks.{i}.mlp.c_proj."),
)
_EVA_NAMES: tuple[tuple[str, str], ...] = (
    ("backbone.cls_token", "visual.cls_token"),
    ("backbone.pos_embed", "visual.pos_embed"),
    ("backbone.patch_embed.proj.", "visual.patch_embed.proj."),
    ("backbone.norm.", "visual.norm."),
    ("proj.", "visual.head."),
    ("backbone.blocks.{i}.attn.q_proj.bias", "visual.blocks.{i}.attn.q_bias"),
    ("backbone.blocks.{i}.attn.v_proj.bias", "visual.blocks.{i}.attn.v_bias"),
    ("backbone.blocks.{i}.attn.norm.", "visual.blocks.{i}.attn.inner_attn_ln."),
    ("backbone.blocks.{i}.mlp.fc1_g.", "visual.blocks.{i}.mlp.w1."),  # SwiGLU: act(w1 x) * w2 x
    ("backbone.blocks.{i}.mlp.fc1_x.", "visual.blocks.{i}.mlp.w2."),
    ("backbone.blocks.{i}.mlp.norm.", "visual.blocks.{i}.mlp.ffn_ln."),
    ("backbone.blocks.{i}.mlp.fc2.", "visual.blocks.{i}.mlp.w3."),
    ("backbone.blocks.{i}.", "visual.blocks.{i}."),  # norm1, norm2, attn.{q,k,v}_proj, attn.proj
)
_HEAD_NAMES = (("head.", "fc."),)
# T1D twice per block; {block} is the official block prefix
_TEMPORAL_NAMES = (("temporal.{i}.pre.conv.weight", "{block}control_point1.conv.weight"),
                   ("temporal.{i}.mid.conv.weight", "{block}control_point2.conv.weight"))
# the official ATMBlock (modules/ATM.py) names one layer per op (``Op.official`` in atm_core.ops)
# and runs them in a fixed order (its add and div layers are commented out there)
_ATM_PARTS = (("reduce.", "{reduce}"), ("encoder.{i}.", "uv2c.conv{i}."),
              ("transfer.0.", "{transfer}.conv1."), ("transfer.1.", "{transfer}.conv2."),
              ("fuse.0.", "{transfer}.conv3_fuse.1."), ("fuse.1.", "{transfer}.conv3_fuse.2."),
              ("proj.", "{transfer}.upsample.0."))
# EVA's rotary tables are buffers the model computes from its token grid: reported, not loaded
_DERIVED = re.compile(r"^visual\.(?:blocks\.\d+\.attn\.)?rope\.")


def _rename(name: str, rows: tuple[tuple[str, str], ...], **fields: str) -> Optional[str]:
    """``name`` renamed by the first matching row of ``rows`` (ours -> official), or None."""
    for ours, theirs in rows:
        pattern = "^" + re.escape(ours).replace(re.escape("{i}"), r"(?P<i>\d+)")
        pattern += "(?P<rest>.*)$" if ours.endswith(".") else "$"
        match = re.match(pattern, name)
        if match:
            index = match.groupdict().get("i")
            return theirs.format(i=index, **fields) + match.groupdict().get("rest", "")
    return None


def _atm_prefix(model: nn.Module) -> str:
    block = "visual.blocks" if model.is_eva else "visual.transformer.resblocks"
    return f"{block}.{model.atm_after_blocks}.control_point_c."


def _check_official_ops(model: nn.Module) -> None:
    if model.atm is None:
        return
    official = sorted((op for op in OPS.values() if op.official), key=lambda op: op.official.position)
    order = [op.name for op in official if op.name in model.atm.ops]
    if list(model.atm.ops) != order:
        raise ValueError(f"the official ATMBlock runs its ops in the order {', '.join(op.name for op in official)}, "
                         f"each at most once; this model's ATM runs {', '.join(model.atm.ops)}, which it cannot hold")


def official_name(model: nn.Module, key: str) -> Optional[str]:
    """The official code's name of the video model's tensor ``key`` (None: it has none)."""
    if key.startswith("atm."):
        index, rest = key.split(".", 2)[1:]
        official = OPS[model.atm[int(index)].op].official
        if official is None:
            return None
        name = _rename(rest, _ATM_PARTS, reduce=official.reduce, transfer=official.transfer)
        return None if name is None else f"{_atm_prefix(model)}{official.layer}.{name}"
    if key.startswith("temporal."):
        index = key.split(".")[1]
        block = "visual.blocks" if model.is_eva else "visual.transformer.resblocks"
        return _rename(key, _TEMPORAL_NAMES, block=f"{block}.{index}.")
    return _rename(key, _HEAD_NAMES) or _rename(key, _EVA_NAMES if model.is_eva else _CLIP_NAMES)


def official_names(model: nn.Module) -> dict[str, str]:
    """Every tensor of a video ViT -> its official name; ValueError listing those without one."""
    if not hasattr(model, "is_eva"):
        raise ValueError(f"the official ATM code has ViT models only, not a {type(model).__name__}")
    _check_official_ops(model)
    names = {key: official_name(model, key) for key in model.state_dict()}
    unnamed = [key for key, name in names.items() if name is None]
    if unnamed:
        raise ValueError(f"{len(unnamed)} tensor(s) of this model have no place in the official layout: "
                         f"{_shorten(unnamed, _SHOWN)}")
    return names


def _to_official(key: str, official: str, value: torch.Tensor) -> torch.Tensor:
    if official == "visual.class_embedding":  # OpenAI CLIP's are (C,) and (N, C), EVA's (1, 1, C), (1, N, C)
        return value.reshape(-1)
    if official == "visual.positional_embedding":
        return value[0]
    if official == "visual.proj":  # OpenAI's projection is used as x @ proj
        return value.t()
    if key.startswith("atm.") and value.dim() == 4:  # the official ATM convolves (1, k, k) in 3-D
        return value.unsqueeze(2)
    return value


def _from_official(key: str, official: str, value: torch.Tensor) -> torch.Tensor:
    if official in ("visual.class_embedding", "visual.positional_embedding") and value.dim() in (1, 2):
        return value.reshape(1, -1, value.shape[-1])
    if official == "visual.proj" and value.dim() == 2:
        return value.t()
    if key.startswith("atm.") and value.dim() == 5 and value.shape[2] == 1:
        return value.squeeze(2)
    return value


def to_official(model: nn.Module) -> dict[str, torch.Tensor]:
    """The video ViT's state dict in the official code's layout (the ``module`` of its checkpoints)."""
    names = official_names(model)
    return {names[k]: _to_official(k, names[k], v.detach().cpu()) for k, v in model.state_dict().items()}


def is_official(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` is the official code's video model: ``visual.*`` tensors and the ``fc`` head."""
    return "fc.weight" in state and all(k.startswith(("visual.", "fc.")) for k in state)


def from_official(state: Mapping[str, torch.Tensor], model: nn.Module,
                  source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official-layout state dict in the video model's key space, and the derived buffers left out.

    Raises ``ValueError`` listing the keys that map to nothing in ``model`` and the tensors whose
    shape does not fit.
    """
    ours = {official: key for key, official in official_names(model).items()}
    own = model.state_dict()
    derived = sorted(k for k in state if _DERIVED.match(k))
    unknown = sorted(k for k in state if k not in ours and k not in derived)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} key(s) of the official checkpoint have no place in this "
                         f"model: {_shorten(unknown, _SHOWN)} (is it another architecture, ATM position "
                         f"(atm.after_blocks={model.atm_after_blocks}) or set of ops?)")
    out, misfit = {}, []
    for official, value in state.items():
        if official in derived:
            continue
        key = ours[official]
        converted = _from_official(key, official, value)
        if converted.shape != own[key].shape:
            misfit.append(f"{official}: checkpoint {tuple(value.shape)} vs model {key} {tuple(own[key].shape)}")
        out[key] = converted
    if misfit:
        raise ValueError(f"{source}: {len(misfit)} tensor(s) of the official checkpoint do not fit the model: "
                         f"{_shorten(misfit, _SHOWN)}")
    return out, derived


# ---------------------------------------------------------------- the entry point

# a checkpoint directory's weights file, first found wins: ours (best/, Accelerate save_state), DeepSpeed
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "mp_rank_00_model_states.pt")


def weights_file(path: str | Path, use_ema: bool = False) -> Path:
    """The weights file of a checkpoint file or directory (with ``use_ema``, its ``ema.safetensors``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_file():
        return path
    if use_ema:
        if not (path / "ema.safetensors").is_file():
            raise FileNotFoundError(f"{path} has no EMA weights (ema.safetensors); "
                                    "train with train.ema=true or set eval.use_ema=false")
        return path / "ema.safetensors"
    for name in _WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no weights in {path}: expected one of {', '.join(_WEIGHT_FILES)}")


def load_video_weights(model: nn.Module, path: str | Path, *, use_ema: bool = False,
                       strict: bool = False) -> LoadReport:
    """Load the checkpoint at ``path`` (file or directory, see the module docstring) into ``model``;
    return (and attach as ``model.load_report``) a :class:`LoadReport`.

    Raises ``ValueError`` naming the keys on a shape mismatch, on keys the official layout cannot
    place, on missing backbone tensors, when nothing in the file fits the model, and -- with
    ``strict`` (evaluation) -- on any model tensor the checkpoint lacks or checkpoint key left over.
    """
    path = weights_file(path, use_ema)
    raw = read_state_dict(path)
    derived: list[str] = []
    if is_official(raw):
        layout, ignored = "official ATM", []
        state, derived = from_official(raw, model, str(path))
    else:
        layout = "video model" if any(k.startswith("backbone.") for k in raw) else "image backbone"
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
    if strict:
        absent = [k for k in own if k not in matched]
        if absent or ignored:
            raise ValueError(f"{path}: not a checkpoint of this whole model: it lacks {len(absent)} tensor(s)"
                             f"{': ' + _shorten(absent, _SHOWN) if absent else ''} and has {len(ignored)} "
                             f"key(s) the model has no place for{': ' + _shorten(ignored, _SHOWN) if ignored else ''}")
    model.load_state_dict(matched, strict=False)
    report = LoadReport(str(path), loaded=sorted(matched),
                        new=[n for n, _ in model.named_parameters() if n not in matched], ignored=ignored,
                        layout=layout, derived=derived)
    model.load_report = report
    _logger.info(report.summary())
    return report

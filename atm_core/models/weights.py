"""Loading image-backbone weights into a video model.

Foreign checkpoints (OpenAI CLIP TorchScript archives or state dicts, open_clip and timm
state dicts) go through the backbone family's timm filter function, which renames keys
and resamples position embeddings; the CLIP projection timm calls ``head`` becomes our
``proj``. Everything the checkpoint does not cover (ATM, temporal modules, classifier)
is reported as newly initialised.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

FilterFn = Callable[[dict, nn.Module], dict]


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        groups = sorted({name.split(".")[0] for name in self.new})
        return (f"{self.source}: loaded {len(self.loaded)} tensors; newly initialised "
                f"{len(self.new)} ({', '.join(groups) or 'none'}); ignored {len(self.ignored)}")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt``/``.pth``/``.bin`` file, a TorchScript archive or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    elif is_torchscript(path):
        obj = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{path} is not a PyTorch checkpoint: {error}") from error
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return dict(obj)


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def to_video_keys(backbone_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm backbone keys -> video-model keys: ``backbone.*``, and the CLIP ``head`` -> ``proj``."""
    proj = getattr(model, "proj", None)
    out = {}
    for key, value in backbone_state.items():
        if key.startswith("head."):
            if isinstance(proj, nn.Linear) and (key == "head.weight" or proj.bias is not None):
                out["proj." + key[len("head."):]] = value
            elif key == "head.bias" and proj is not None and torch.count_nonzero(value):
                raise ValueError("the checkpoint's projection has a non-zero bias but this model's is bias-free")
        else:
            out["backbone." + key] = value
    return out


def load_backbone_weights(
    model: nn.Module, state: dict[str, torch.Tensor], filter_fn: FilterFn | None, source: str
) -> LoadReport:
    """Convert ``state`` with ``filter_fn`` (timm's, for the backbone family) and load it."""
    if filter_fn is not None:
        state = filter_fn(state, model.backbone)
    state = to_video_keys(state, model)
    own = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"{source}: shape mismatch for {len(mismatched)} tensors:\n  " + "\n  ".join(mismatched))
    missing, unexpected = model.load_state_dict(state, strict=False)
    report = LoadReport(source, loaded=[k for k in state if k in own], new=list(missing), ignored=list(unexpected))
    if not report.loaded:
        raise ValueError(f"{source}: no tensor of the checkpoint matches this model's backbone")
    log.info(report.summary())
    return report

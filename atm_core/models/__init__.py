"""Video models over timm backbones, registered with timm (importing this package registers them)."""
from .classifier import VideoClassifier
from .factory import SPECS, BackboneSpec, build_video_model, resolved_atm
from ..atm import ATMOptions
from .resnet import VideoResNet
from .vit import VideoViT
from .weights import LoadReport, from_official, load_video_weights, read_state_dict, to_official

__all__ = [
    "SPECS", "ATMOptions", "BackboneSpec", "LoadReport", "VideoClassifier", "VideoResNet", "VideoViT",
    "build_video_model", "from_official", "resolved_atm", "load_video_weights", "read_state_dict", "to_official",
]

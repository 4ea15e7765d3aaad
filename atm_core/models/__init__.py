"""Video models over timm backbones, registered with timm (importing this package registers them)."""
from .classifier import VideoClassifier
from .factory import SPECS, BackboneSpec, build_video_model
from .resnet import VideoResNet
from .vit import VideoViT
from .weights import LoadReport, load_pretrained, read_state_dict

__all__ = [
    "SPECS", "BackboneSpec", "LoadReport", "VideoClassifier", "VideoResNet", "VideoViT",
    "build_video_model", "load_pretrained", "read_state_dict",
]

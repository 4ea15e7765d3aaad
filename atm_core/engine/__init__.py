"""Training and evaluation engine on HF Accelerate.

    cfg = load_config("params/synthetic_atm_mul_sub.yaml", ["optim.epochs=5"])
    result = train(cfg)                 # {"output_dir", "best_top1", "best_epoch", "last", "skipped", "padded", "eval"}
    summary = evaluate(cfg, "best")     # {"top1", "top5", "mean_class_acc", "num_videos", "skipped", ...}
"""
from .config import Config, ConfigError, load_config
from .evaluation import evaluate, evaluate_model
from .tracking import read_metrics
from .trainer import train

__all__ = ["Config", "ConfigError", "evaluate", "evaluate_model", "load_config", "read_metrics", "train"]

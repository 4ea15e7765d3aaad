"""Training and evaluation engine on HF Accelerate."""
from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config"]

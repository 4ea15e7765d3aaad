"""The recipe for a user's own small dataset on the CPU (params/custom_cpu.yaml)."""
from pathlib import Path

import pytest

from atm_core.data.synthetic import generate_benchmark
from atm_core.data.synthetic.textures import CLASSES
from atm_core.engine import train
from atm_core.engine import builders
from atm_core.engine.config import ConfigError, load_config

RECIPE = Path(__file__).resolve().parents[1] / "params" / "custom_cpu.yaml"
SHORT = ["optim.epochs=1", "optim.warmup_epochs=0", "train.batch_size=6", "eval.batch_size=12",
         "data.num_workers=0", "train.threads=1", "train.progress=false"]


def test_custom_recipe_trains_on_a_folder_of_ones_own_clips(tmp_path):
    # one's own clips: real-texture clips in the project's list format, with their class names
    root = tmp_path / "my_videos"
    generate_benchmark(root, seed=4, track="textures", train_per_class=1, val_per_class=1, size=48,
                       num_frames=24)
    (root / "benchmark.json").unlink()  # nothing says it is the built-in benchmark
    cfg = load_config(RECIPE, [f"data.root={root}", f"train.output_dir={tmp_path / 'run'}", *SHORT])
    assert cfg.data.dataset == "custom" and cfg.data.generate is None and cfg.data.preflight
    assert cfg.model.atm.ops == ("mul", "sub") and cfg.model.temporal == "tokent1d"
    result = train(cfg)
    assert result["eval"]["num_videos"] == 12 and result["skipped"] == {"train": 0, "val": 0}
    assert (tmp_path / "run" / "eval" / "confusion.npy").is_file()
    assert list(builders.dataset(cfg, "val").classes) == list(CLASSES)  # the class names of labels.csv


def test_custom_recipe_names_a_missing_folder(tmp_path):
    cfg = load_config(RECIPE, [f"data.root={tmp_path / 'nowhere'}", f"train.output_dir={tmp_path / 'run'}", *SHORT])
    with pytest.raises(ConfigError, match=f"key 'data.root': directory {tmp_path / 'nowhere'} does not exist"):
        train(cfg)

"""The built-in benchmark's held-out test split: clips of their own from the same generator, the
reversal-pair property intact, and the final evaluation reading it through data.test_list."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atm_core import workbook
from atm_core.data import generate_benchmark
from atm_core.data.synthetic import CLASSES
from atm_core.engine import load_config
from atm_core.engine import builders

PARAMS = Path(__file__).resolve().parents[1] / "params"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=0, train_per_class=1, val_per_class=1, test_per_class=1, size=32,
                       num_frames=8, frames=True)
    return root


def frames_of(root: Path, list_name: str) -> list[np.ndarray]:
    from PIL import Image

    folders = [line.split()[0] for line in (root / list_name).read_text().splitlines()]
    return [np.stack([np.asarray(Image.open(p)) for p in sorted((root / f).glob("*.jpg"))]) for f in folders]


def test_test_split_has_clips_of_its_own(bench):
    lines = (bench / "test.txt").read_text().splitlines()
    assert len(lines) == len(CLASSES) and all(line.startswith("videos/test/") for line in lines)
    assert [int(line.split()[2]) for line in lines] == list(range(len(CLASSES)))
    test, val, train = (frames_of(bench, f"{s}_frames.txt") for s in ("test", "val", "train"))
    for i, clip in enumerate(test):  # no test clip repeats a training or validation clip
        assert all(np.abs(clip.astype(int) - other.astype(int)).mean() > 5 for other in [*val, *train]), CLASSES[i]
    for pair in range(len(CLASSES) // 2):  # the second class of a pair is the first played backwards
        forward, backward = test[2 * pair].astype(int), test[2 * pair + 1].astype(int)
        assert np.abs(forward[::-1] - backward).max() <= 8  # JPEG rounding only


def test_no_test_split_unless_asked_and_a_missing_one_fails_before_training(tmp_path):
    from atm_core.engine import ConfigError, train

    generate_benchmark(tmp_path / "data", seed=0, train_per_class=1, val_per_class=1, size=32, num_frames=8)
    assert not (tmp_path / "data" / "test.txt").exists()
    cfg = load_config(PARAMS / "synthetic_base.yaml", [f"data.root={tmp_path / 'data'}", "data.generate=null",
                                                       f"train.output_dir={tmp_path / 'run'}", "data.num_workers=0"])
    with pytest.raises(ConfigError, match="split 'test'.*test.txt: list file not found"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_final_evaluation_reads_data_test_list(bench):
    cfg = load_config(PARAMS / "synthetic_base.yaml", [f"data.root={bench}", "data.generate=null"])
    assert cfg.data.test_list == "test.txt" and cfg.data.generate is None
    test, val = builders.dataset(cfg, "test"), builders.dataset(cfg, "val")
    assert all(r.path.startswith("videos/test/") for r in test.records)
    assert all(r.path.startswith("videos/val/") for r in val.records)
    cfg.data.test_list = None  # unset: the final evaluation falls back to the validation list
    assert [r.path for r in builders.dataset(cfg, "test").records] == [r.path for r in val.records]


def test_direction_report_on_mirrored_pairs():
    classes = [f"c{i}" for i in range(6)]
    predictions = pd.DataFrame({"label": [1, 1, 2, 2, 2, 4], "pred": [1, 2, 3, 2, 0, 4]})
    predictions["correct"] = (predictions.label == predictions.pred).astype(int)
    report = workbook.direction_report(predictions, classes, {1: 2, 2: 1, 3: 4, 4: 3})
    assert report.pair.tolist() == ["c1 / c2", "c3 / c4"]
    assert report.videos.tolist() == [5, 1]
    assert report.accuracy[0] == pytest.approx(40.0)
    assert report.taken_for_mirror[0] == pytest.approx(20.0)  # one video of c1 taken for c2
    assert report.in_pair[0] == pytest.approx(60.0)
    with pytest.raises(ValueError, match=r"mirrored classes \[86, 87\] are not among the 6 classes"):
        workbook.direction_report(predictions, classes, {86: 87, 87: 86})
    ss = load_config(PARAMS / "ssv2_vit_b16_f8.yaml")
    assert workbook.flip_labels(ss) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert workbook.flip_labels(load_config(PARAMS / "k400_vit_b16_f8.yaml")) == {}

"""The built-in temporal benchmark: 12 classes in 6 time-reversal pairs.

    python -m atm_core.data.synthetic --out data/synthetic --seed 0 [--track textures] [--frames]

Every clip of the first class of a pair is rendered forward with a random appearance; the
second class of the pair is *the same clip played backwards* (clip ``k`` of class ``2p + 1`` is
clip ``k`` of class ``2p`` reversed, in every split). So the two classes share exactly the same
frames and only their order tells them apart: any order-blind model (TSN: mean of per-frame
scores) gives both members of a reversed pair the same score and cannot exceed 50 % within a
pair, while a temporal model is not bounded by it.

Modules: :mod:`.shapes` and :mod:`.textures` render one forward clip of a track;
:mod:`.tracks` registers them and owns the reversal rule (:func:`pair_clips`); :mod:`.writer`
writes a benchmark (:func:`generate_benchmark`, :func:`ensure_benchmark`); :mod:`.cli` is the
command line. The reversal-pair property is not a tunable: it holds for any settings.

Storage is exactly like real data: H.264 ``.mp4`` (``videos/``), optionally JPEG frame folders
(``frames/``, ``00001.jpg`` ...), SS-format lists ``train.txt`` / ``val.txt``
(``relative_path num_frames label``; ``train_frames.txt`` / ``val_frames.txt`` for the
folders; ``test.txt`` / ``test_frames.txt`` for the held-out test split when asked for) and ``labels.csv`` (``id,name``). Videos are intra-only with a constant quantiser and
a single-threaded encoder: every frame is coded on its own, so the files are reproducible
byte for byte, and a reversed clip decodes to exactly the reversed frames (the pair property
survives compression). With 24 source frames and T = 8 the TSN segments (3 frames each) are
symmetric under reversal too; keep ``num_frames`` an odd multiple of T for that.
"""
from .cli import main
from .shapes import CLASSES, FLIP_LABELS, MOTIONS, Difficulty, render_clip
from .tracks import (
    DEFAULT_ROOT,
    TRACK_ROOTS,
    TRACKS,
    Track,
    benchmark_track,
    class_clip,
    pair_clips,
)
from .writer import (
    SPEC_FILE,
    benchmark_spec,
    ensure_benchmark,
    generate_benchmark,
    spec_differences,
    track_settings,
    write_class_video,
    write_frames,
    write_mp4,
)

__all__ = [
    "CLASSES",
    "DEFAULT_ROOT",
    "FLIP_LABELS",
    "MOTIONS",
    "SPEC_FILE",
    "TRACKS",
    "TRACK_ROOTS",
    "Difficulty",
    "Track",
    "benchmark_spec",
    "benchmark_track",
    "class_clip",
    "ensure_benchmark",
    "generate_benchmark",
    "main",
    "pair_clips",
    "render_clip",
    "spec_differences",
    "track_settings",
    "write_class_video",
    "write_frames",
    "write_mp4",
]

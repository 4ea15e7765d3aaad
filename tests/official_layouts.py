"""Tiny datasets in the official layouts (annotation files and media), made by the tests."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image

from atm_core.data import render_clip

# A few real class names of each dataset; the clips are the built-in benchmark's motions.
SSV2_CLASSES = ["Moving something from left to right", "Moving something from right to left",
                "Moving something up", "Moving something down"]
SS_MOTIONS = [("left", True), ("left", False), ("up", False), ("up", True)]  # (motion, reversed)
K400_CLASSES = ["abseiling", "air drumming", "archery", "bowling"]


def clip_frames(index: int, size: tuple[int, int], num_frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the motion of class ``index % 4`` rendered at ``size`` (h, w)."""
    h, w = size
    motion, backwards = SS_MOTIONS[index % 4]
    square = render_clip(motion, np.random.default_rng(index), size=h, num_frames=num_frames)
    square = square[::-1] if backwards else square
    return np.ascontiguousarray(np.pad(square, ((0, 0), (0, 0), (0, w - h), (0, 0)), mode="edge"))


def write_video(path: Path, frames: np.ndarray, codec: str, fps: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libvpx-vp9":
            stream.options = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_ssv2(root: Path, per_split: dict[str, int], size=(240, 320), num_frames=12) -> Path:
    """``root/annotations`` (official JSON) and ``root/videos/<id>.webm`` (VP9)."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "something-something-v2-labels.json").write_text(
        json.dumps({name: str(i) for i, name in enumerate(SSV2_CLASSES)}))
    video_id = 1000
    for split, count in per_split.items():
        items = []
        for k in range(count):
            name = SSV2_CLASSES[k % 4]
            template = name.replace("something", "[something]")
            items.append({"id": str(video_id), "label": name.lower(), "template": template,
                          "placeholders": ["a cup"]})
            write_video(root / "videos" / f"{video_id}.webm", clip_frames(k, size, num_frames),
                        "libvpx-vp9")
            video_id += 1
        suffix = "train" if split == "train" else "validation"
        (ann / f"something-something-v2-{suffix}.json").write_text(json.dumps(items))
    return root


def make_ssv1(root: Path, per_split: dict[str, int], size=(100, 132), num_frames=12) -> Path:
    """``root/annotations`` (official CSVs) and ``root/frames/<id>/00001.jpg ...``."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "something-something-v1-labels.csv").write_text("\n".join(SSV2_CLASSES) + "\n")
    video_id = 1
    for split, count in per_split.items():
        rows = []
        for k in range(count):
            folder = root / "frames" / str(video_id)
            folder.mkdir(parents=True)
            for t, frame in enumerate(clip_frames(k, size, num_frames)):
                Image.fromarray(frame).save(folder / f"{t + 1:05d}.jpg", quality=95)
            rows.append(f"{video_id};{SSV2_CLASSES[k % 4]}")
            video_id += 1
        suffix = "train" if split == "train" else "validation"
        (ann / f"something-something-v1-{suffix}.csv").write_text("\n".join(rows) + "\n")
    return root


def make_k400(root: Path, per_split: dict[str, int], size=(96, 128), num_frames=12) -> Path:
    """``root/annotations/{train,validate}.csv`` and trimmed H.264 clips
    ``root/videos/<youtube_id>_<start:06d>_<end:06d>.mp4``."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    n = 0
    for split, count in per_split.items():
        name = "train.csv" if split == "train" else "validate.csv"
        with (ann / name).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for k in range(count):
                youtube_id, start = f"yt{n:09d}", 10 * n
                writer.writerow([K400_CLASSES[k % 4], youtube_id, start, start + 10,
                                 "train" if split == "train" else "val"])
                write_video(root / "videos" / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4",
                            clip_frames(k, size, num_frames), "libx264")
                n += 1
    return root

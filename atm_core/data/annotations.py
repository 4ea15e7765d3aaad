"""The datasets' official annotation files -> classes and (video, label) entries per split.

Readers collect every problem (bad JSON, a class missing from the labels file, a duplicate id,
a malformed row) as a :class:`~atm_core.data.probe.Problem` naming the file and the entry or
line, and go on, so that one run reports all of them.

Layouts (file names inside the annotation folder):
  * ``ssv2``: ``something-something-v2-labels.json`` (``{"class name": "index"}``),
    ``something-something-v2-train.json`` / ``-validation.json`` (lists of ``{"id", "label",
    "template", "placeholders"}``; the class is the template without its square brackets).
  * ``ssv1``: ``something-something-v1-labels.csv`` (one class per line, index = line - 1),
    ``something-something-v1-train.csv`` / ``-validation.csv`` (``<id>;<class name>``).
  * ``k400``: ``train.csv`` / ``validate.csv`` (``label,youtube_id,time_start,time_end,split``);
    classes are the training labels sorted alphabetically, unless a label file is given.
  * the reference's own lists (``<path> <num_frames> <label>``, with its ``id,name`` labels CSV).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .lists import parse_list_line, read_labels
from .probe import Problem

SPLITS = ("train", "val")
ANNOTATION_FILES = {
    "ssv2": {"labels": "something-something-v2-labels.json",
             "train": "something-something-v2-train.json",
             "val": "something-something-v2-validation.json"},
    "ssv1": {"labels": "something-something-v1-labels.csv",
             "train": "something-something-v1-train.csv",
             "val": "something-something-v1-validation.csv"},
    "k400": {"train": "train.csv", "val": "validate.csv"},
}
NAME_PATTERNS = {
    "ssv2": "{id}.webm",
    "ssv1": "{id}",
    "k400": "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
}


@dataclass(frozen=True)
class Entry:
    """One annotated video: its file (or frame folder) relative to the media folder."""

    video: str
    label: int
    where: str  # "file: entry N (id X)" or "file:line", for messages


@dataclass
class Annotations:
    classes: list[str]
    splits: dict[str, list[Entry]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _load_json(path: Path, problems: list[Problem]):
    if not path.is_file():
        problems.append(Problem(str(path), "annotation file not found"))
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        problems.append(Problem(f"{path}:{e.lineno}", f"invalid JSON ({e.msg}, column {e.colno})"))
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), f"not UTF-8 text ({e.reason})"))
    return None


def _csv_rows(path: Path, problems: list[Problem], delimiter: str = ","
              ) -> Iterable[tuple[int, list[str]]]:
    if not path.is_file():
        problems.append(Problem(str(path), "annotation file not found"))
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})"))
        return
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        if row and "".join(row).strip():
            yield number, row


def _format(pattern: str, fields: dict) -> str:
    try:
        return pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"name pattern {pattern!r} cannot be filled from the fields "
                         f"{sorted(fields)}: {e!r}") from None


def _text_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str]]:
    """Non-blank stripped lines with their numbers (class names may contain commas)."""
    if not path.is_file():
        problems.append(Problem(str(path), "annotation file not found"))
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})"))
        return []
    return [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]


class _Collector:
    """Builds the entries of the splits, refusing an id seen before (in any split)."""

    def __init__(self, annotations: Annotations):
        self.annotations = annotations
        self.first_seen: dict[str, str] = {}

    def add(self, split: str, video_id: str, class_name: str | None, label: int | None,
            video: str, where: str) -> None:
        problems = self.annotations.problems
        if video_id in self.first_seen:
            problems.append(Problem(where, f"duplicate id {video_id!r} (first at "
                                           f"{self.first_seen[video_id]})"))
            return
        self.first_seen[video_id] = where
        if label is None:
            problems.append(Problem(where, f"class {class_name!r} is not in the labels file"))
            return
        self.annotations.splits.setdefault(split, []).append(Entry(video, label, where))


def read_ssv2(folder: Path, pattern: str = NAME_PATTERNS["ssv2"]) -> Annotations:
    files = {k: folder / v for k, v in ANNOTATION_FILES["ssv2"].items()}
    problems: list[Problem] = []
    raw = _load_json(files["labels"], problems)
    index: dict[str, int] = {}
    if raw is not None and not isinstance(raw, dict):
        problems.append(Problem(str(files["labels"]), "expected an object {class name: index}"))
        raw = None
    for name, value in (raw or {}).items():
        try:
            index[name] = int(value)
        except (TypeError, ValueError):
            problems.append(Problem(f"{files['labels']}: class {name!r}",
                                    f"index {value!r} is not an integer"))
    classes = _classes_from_index(index, files["labels"], problems)
    annotations = Annotations(classes, problems=problems)
    collector = _Collector(annotations)
    for split in SPLITS:
        data = _load_json(files[split], problems)
        if data is None:
            continue
        if not isinstance(data, list):
            problems.append(Problem(str(files[split]), "expected a list of entries"))
            continue
        for number, item in enumerate(data):
            where = f"{files[split]}: entry {number}"
            if not isinstance(item, dict) or "id" not in item or "template" not in item:
                problems.append(Problem(where, f"expected an object with 'id' and 'template', "
                                               f"got {str(item)[:80]!r}"))
                continue
            video_id = str(item["id"])
            name = str(item["template"]).replace("[", "").replace("]", "")
            collector.add(split, video_id, name, index.get(name),
                          _format(pattern, {"id": video_id}), f"{where} (id {video_id})")
    return annotations


def _classes_from_index(index: dict[str, int], file: Path, problems: list[Problem]) -> list[str]:
    by_id: dict[int, str] = {}
    for name, i in index.items():
        if i in by_id:
            problems.append(Problem(f"{file}: class {name!r}",
                                    f"index {i} already used by {by_id[i]!r}"))
        by_id[i] = name
    missing = sorted(set(range(len(by_id))) - set(by_id))
    if missing:
        problems.append(Problem(str(file), f"class indices must be 0..{len(by_id) - 1}, "
                                           f"missing {missing[:10]}"))
    return [by_id[i] for i in sorted(by_id)]


def read_ssv1(folder: Path, pattern: str = NAME_PATTERNS["ssv1"]) -> Annotations:
    files = {k: folder / v for k, v in ANNOTATION_FILES["ssv1"].items()}
    problems: list[Problem] = []
    classes: list[str] = []
    index: dict[str, int] = {}
    lines = _text_lines(files["labels"], problems)
    for number, name in lines:
        if name in index:
            problems.append(Problem(f"{files['labels']}:{number}", f"duplicate class {name!r}"))
            continue
        index[name] = len(classes)
        classes.append(name)
    annotations = Annotations(classes, problems=problems)
    collector = _Collector(annotations)
    for split in SPLITS:
        for number, row in _csv_rows(files[split], problems, delimiter=";"):
            where = f"{files[split]}:{number}"
            if len(row) != 2:
                problems.append(Problem(where, f"expected '<id>;<class name>', got "
                                               f"{';'.join(row)!r}"))
                continue
            video_id, name = row[0].strip(), row[1].strip()
            collector.add(split, video_id, name, index.get(name),
                          _format(pattern, {"id": video_id}), where)
    return annotations


K400_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


def read_k400(folder: Path, pattern: str = NAME_PATTERNS["k400"],
              label_file: Path | None = None) -> Annotations:
    files = {k: folder / v for k, v in ANNOTATION_FILES["k400"].items()}
    problems: list[Problem] = []
    rows: dict[str, list[tuple[str, dict]]] = {}
    for split in SPLITS:
        header: list[str] | None = None
        for number, row in _csv_rows(files[split], problems):
            where = f"{files[split]}:{number}"
            if header is None:
                header = [c.strip() for c in row]
                lacking = [c for c in K400_COLUMNS[:4] if c not in header]
                if lacking:
                    problems.append(Problem(where, f"header lacks column(s) {lacking}; expected "
                                                   f"{','.join(K400_COLUMNS)}"))
                    break
                continue
            if len(row) != len(header):
                problems.append(Problem(where, f"expected {len(header)} fields, got {len(row)}"))
                continue
            record = dict(zip(header, (v.strip() for v in row)))
            try:
                record["time_start"] = int(float(record["time_start"]))
                record["time_end"] = int(float(record["time_end"]))
            except ValueError:
                problems.append(Problem(where, f"time_start/time_end not numbers: "
                                               f"{record['time_start']!r}, {record['time_end']!r}"))
                continue
            rows.setdefault(split, []).append((where, record))
    if label_file is not None:
        try:
            classes = read_labels(label_file)
        except DataError as e:
            problems.append(Problem(str(label_file), str(e)))
            classes = []
    else:
        classes = sorted({r["label"] for _, r in rows.get("train", [])})
    index = {name: i for i, name in enumerate(classes)}
    annotations = Annotations(classes, problems=problems)
    collector = _Collector(annotations)
    for split, split_rows in rows.items():
        for where, r in split_rows:
            video_id = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
            video = _format(pattern, r)
            collector.add(split, video_id, r["label"], index.get(r["label"]), video, where)
    return annotations


def read_reference_lists(train_list: Path, val_list: Path, label_file: Path) -> Annotations:
    """The reference's shipped lists (``<path> <num_frames> <label>``) as they are."""
    problems: list[Problem] = []
    try:
        classes = read_labels(label_file)
    except DataError as e:
        problems.append(Problem(str(label_file), str(e)))
        classes = []
    annotations = Annotations(classes, problems=problems)
    collector = _Collector(annotations)
    for split, path in zip(SPLITS, (train_list, val_list)):
        if not path.is_file():
            problems.append(Problem(str(path), "list file not found"))
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{path}:{number}"
            try:
                record = parse_list_line(line, where, len(classes) or None)
            except DataError as e:
                problems.append(Problem(where, str(e).removeprefix(f"{where}: ")))
                continue
            collector.add(split, record.path, None, record.label, record.path, where)
    return annotations


READERS: dict[str, Callable[..., Annotations]] = {"ssv2": read_ssv2, "ssv1": read_ssv1,
                                                  "k400": read_k400}

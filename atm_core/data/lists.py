"""List files (one clip per line) and label files, in the reference formats.

List lines: ``path num_frames label`` (frame folders, or videos) or ``path label`` (videos; the
frame count is then read from the container). Paths are relative to the dataset root and may
contain spaces. Label files: CSV ``id,name`` with an optional header, ids ``0 .. C-1``.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

log = logging.getLogger(__name__)
_WITH_COUNT = re.compile(r"^(?P<path>.+?)\s+(?P<frames>-?\d+)\s+(?P<label>-?\d+)$")
_WITHOUT_COUNT = re.compile(r"^(?P<path>.+?)\s+(?P<label>-?\d+)$")


@dataclass(frozen=True)
class ClipRecord:
    path: str
    num_frames: int | None
    label: int
    source: str  # "list_file:line" for error messages


def parse_list_line(line: str, source: str, num_classes: int | None = None) -> ClipRecord:
    """Parse one list line; ``source`` ("file:line") prefixes any error."""
    text = line.strip()
    match = _WITH_COUNT.match(text) or _WITHOUT_COUNT.match(text)
    if match is None:
        raise DataError(f"{source}: expected 'path [num_frames] label', got {text!r}")
    fields = match.groupdict()
    frames = int(fields["frames"]) if fields.get("frames") is not None else None
    label = int(fields["label"])
    if frames is not None and frames <= 0:
        raise DataError(f"{source}: num_frames must be positive, got {frames} in {text!r}")
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{source}: label {label} out of range {bound} in {text!r}")
    return ClipRecord(fields["path"], frames, label, source)


def read_list(list_file: str | Path, num_classes: int | None = None,
              on_error: str = "raise") -> tuple[list[ClipRecord], int]:
    """All records of a list file, and how many bad lines were skipped (``on_error="skip"``).
    Blank lines and lines starting with ``#`` are ignored."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"{list_file}: list file not found")
    records, skipped = [], 0
    with list_file.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                records.append(parse_list_line(line, f"{list_file}:{number}", num_classes))
            except DataError as e:
                if on_error != "skip":
                    raise
                skipped += 1
                log.warning("skipping list line: %s", e)
    if not records:
        raise DataError(f"{list_file}: no usable clips in the list file")
    return records, skipped


def read_labels(label_file: str | Path) -> list[str]:
    """Class names indexed by id from a CSV ``id,name`` file (header optional)."""
    label_file = Path(label_file)
    if not label_file.is_file():
        raise DataError(f"{label_file}: label file not found")
    names: dict[int, str] = {}
    with label_file.open(newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DataError(f"{label_file}:{number}: expected 'id,name', got {','.join(row)!r}")
            try:
                index = int(row[0])
            except ValueError:
                if number == 1:  # header row
                    continue
                raise DataError(f"{label_file}:{number}: id {row[0]!r} is not an integer") from None
            if index in names:
                raise DataError(f"{label_file}:{number}: duplicate id {index}")
            names[index] = ",".join(row[1:]).strip()
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
        raise DataError(f"{label_file}: ids must be 0..{len(names) - 1}, missing {missing[:10]}")
    if not names:
        raise DataError(f"{label_file}: no labels")
    return [names[i] for i in range(len(names))]

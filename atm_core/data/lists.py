"""List files (one clip per line) and label files, in the reference formats.

A list file has one format, fixed by the number of fields of every line (``list_fields`` of the
dataset preset):
  * 3 fields, ``path num_frames label`` (the reference format: frame folders and videos);
  * 2 fields, ``path label`` (videos only; the frame count is read from the container).
A line with another number of fields is refused naming the file and line, so that a line missing
its label is never read as ``path label`` with the frame count for a label. Paths are relative to
the dataset root and may contain spaces (the numeric fields are the last ones; in a 2-field
list a path must not end in a number, which would make the line read as 3 fields). Label files: CSV
``id,name`` with an optional header, ids ``0 .. C-1``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

log = logging.getLogger(__name__)
LIST_FORMATS = {3: "path num_frames label", 2: "path label"}


@dataclass(frozen=True)
class ClipRecord:
    path: str
    num_frames: int | None
    label: int
    source: str  # "list_file:line" for error messages


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file with their 1-based numbers; a line that is not UTF-8 is a
    :class:`DataError` naming the file, line and byte."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}); save the file as UTF-8") from None


def _integer(text: str, name: str, source: str, line: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{source}: {name} {text!r} is not an integer in {line!r}") from None


def parse_list_line(line: str, source: str, num_classes: int | None = None,
                    fields: int = 3) -> ClipRecord:
    """Parse one list line of a ``fields``-field list (see :data:`LIST_FORMATS`); ``source``
    ("file:line") prefixes any error."""
    if fields not in LIST_FORMATS:
        raise ValueError(f"list_fields must be one of {sorted(LIST_FORMATS)}, got {fields}")
    text = line.strip()
    parts = text.rsplit(None, fields - 1)
    if len(parts) != fields:
        raise DataError(f"{source}: expected {fields} fields '{LIST_FORMATS[fields]}', got "
                        f"{len(text.split())} in {text!r}")
    path, *numbers = parts
    if fields == 2 and path.split()[-1].lstrip("-").isdigit():
        raise DataError(f"{source}: expected 2 fields '{LIST_FORMATS[2]}', got a line of 3 "
                        f"'{LIST_FORMATS[3]}' in {text!r} (a list with frame counts needs "
                        "list_fields=3)")
    label = _integer(numbers[-1], "label", source, text)
    frames = _integer(numbers[0], "num_frames", source, text) if fields == 3 else None
    if frames is not None and frames <= 0:
        raise DataError(f"{source}: num_frames must be positive, got {frames} in {text!r}")
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{source}: label {label} out of range {bound} in {text!r}")
    return ClipRecord(path, frames, label, source)


def read_list(list_file: str | Path, num_classes: int | None = None, on_error: str = "raise",
              fields: int = 3) -> tuple[list[ClipRecord], int]:
    """All records of a ``fields``-field list file, and how many bad lines were skipped
    (``on_error="skip"``). Blank lines and lines starting with ``#`` are ignored."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"{list_file}: list file not found")
    records, skipped = [], 0
    for number, line in text_lines(list_file):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            records.append(parse_list_line(line, f"{list_file}:{number}", num_classes, fields))
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
    for number, line in text_lines(label_file):
        row = next(csv.reader([line]), [])
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

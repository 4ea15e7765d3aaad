"""Recipe files: YAML mappings inheriting through ``base: other.yaml`` (relative to the file), with
the line of every key for error messages."""
from __future__ import annotations

from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration problem, reported before any training starts."""


def _line_index(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line number in a YAML text, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}{k.value}"
                lines[name] = k.start_mark.line + 1
                walk(v, name + ".")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def read_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, Path, dict[str, int]]]:
    """The chain of recipes ``path`` inherits from, base first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base' chain: {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    chain = []
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
        chain = read_chain(path.parent / base, seen + (path,))
    return chain + [(data, path, _line_index(text))]

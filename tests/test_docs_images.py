"""Every image the README, the docs and the notebooks show exists in the repository."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def image_paths(markdown: str) -> list[str]:
    """Local image paths of a Markdown text (``![alt](path)`` and ``<img src=...>``), web addresses left out."""
    found = MARKDOWN_IMAGE.findall(markdown) + HTML_IMAGE.findall(markdown)
    return [path for path in found if not re.match(r"^[a-z]+://|^data:", path)]


def documents() -> list[tuple[Path, str]]:
    """(file, Markdown text) of the README, docs/*.md and every notebook's Markdown cells."""
    docs = [(path, path.read_text()) for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        docs.append((path, "\n".join(c.source for c in cells if c.cell_type == "markdown")))
    return docs


def test_image_paths_are_found_in_markdown_and_html():
    text = ('![a](results/x.png) text ![d](https://host/e.png)\n'
            '<img width="300" src="figs/f.svg"> ![g](h.png "title")')
    assert sorted(image_paths(text)) == ["figs/f.svg", "h.png", "results/x.png"]


@pytest.mark.parametrize("path, text", documents(), ids=lambda d: d.name if isinstance(d, Path) else "")
def test_every_shown_image_exists(path, text):
    missing = [image for image in image_paths(text) if not (path.parent / image).is_file()]
    assert not missing, f"{path.relative_to(ROOT)} shows images that do not exist: {missing}"


def test_the_readme_shows_at_least_one_image():
    assert image_paths((ROOT / "README.md").read_text()), "the README's figure is gone from its text"

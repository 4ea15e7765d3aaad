"""The committed notebooks: no outputs (their executed copies in results/runs keep theirs), one
papermill parameters cell, logic kept in atm_core."""
import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"train", "evaluate", "ablation", "visualize_arithmetic", "results"}


def code_of(cell) -> str:
    """Cell source with IPython magics blanked, so that it parses as Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())


def test_every_workbook_notebook_is_there():
    assert {p.stem for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "papermill" not in nb.metadata, f"{path.name} is an executed copy"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_plain_assignments(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    cell = tagged[0]
    assert cell.cell_type == "code"
    tree = ast.parse(cell.source)
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body)
    for node in tree.body:  # papermill overrides literals; anything computed would be surprising
        ast.literal_eval(node.value)
    names = {t.id for node in tree.body for t in node.targets}
    assert {"quick", "results_dir"} <= names
    assert nb.cells.index(cell) <= 2, "parameters belong at the top"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_read_like_a_report(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(code_of(cell), filename=f"{path.name} cell {i}")
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
        assert not defined, f"{path.name} cell {i} defines {defined[0].name}: logic belongs in atm_core"
        assert len(cell.source.splitlines()) <= 15, f"{path.name} cell {i} is long; move logic to atm_core"
    markdown = sum(c.cell_type == "markdown" for c in nb.cells)
    assert markdown >= 3, f"{path.name}: explain what the cells do"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_workbook_names_used_exist(path):
    from atm_core import workbook

    nb = nbformat.read(path, as_version=4)
    used = {node.attr for cell in nb.cells if cell.cell_type == "code"
            for node in ast.walk(ast.parse(code_of(cell)))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "workbook"}
    assert used, f"{path.name} does not use the workbook"
    missing = sorted(used - set(workbook.__all__))
    assert not missing, f"{path.name} calls workbook.{missing[0]}, which atm_core.workbook does not export"
    assert all(hasattr(workbook, name) for name in workbook.__all__)


@pytest.mark.parametrize("stem", ["train", "evaluate", "ablation", "results"])
def test_papermill_reads_every_parameter(stem):
    # papermill skips (and warns about) an assignment whose comment it cannot parse, e.g. one with '='
    import papermill as pm

    path = NOTEBOOK_DIR / f"{stem}.ipynb"
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    names = [t.id for node in ast.parse(cell.source).body for t in node.targets]
    assert list(pm.inspect_notebook(str(path))) == names

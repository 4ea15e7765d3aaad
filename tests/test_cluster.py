"""Training notebooks as cluster jobs through submitit's local executor: real processes, the
failures reported as the local runner reports them."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from atm_core import jobs, reproduce


def project_with(tmp_path: Path, name: str, *sources: str) -> Path:
    """A project folder whose ``notebooks/<name>.ipynb`` has a parameters cell and ``sources``."""
    parameters = new_code_cell("x = 1", metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[parameters, *map(new_code_cell, sources)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "notebooks" / f"{name}.ipynb")
    return tmp_path


@pytest.fixture(autouse=True)
def kernel():
    jobs.check_kernel()


def test_a_failing_notebook_job_keeps_its_partly_executed_copy(tmp_path):
    root = project_with(tmp_path / "project", "boom", "print(f'first cell ran with x={x}')",
                        "raise ValueError('boom')", "print('never')")
    cluster = jobs.Cluster("local", tmp_path / "submitit", minutes=5)
    ok = jobs.Job("boom", "fine", {"x": 2})
    submitted = [jobs.Job("boom", "boom", {"x": 3}), ok]
    timings: dict[str, float] = {}
    failures = jobs.run_on_cluster(cluster, submitted, tmp_path / "results", root, timings)
    assert failures[1] is not None and failures[0] is not None  # both run the failing notebook
    failure = failures[0]
    assert (failure.cell, failure.cells, failure.error) == (3, 4, "ValueError: boom")
    assert failure.output == (tmp_path / "results" / "runs" / "boom.ipynb").resolve()
    kept = {c.source: c.get("outputs") for c in nbformat.read(failure.output, as_version=4).cells}
    assert kept["print(f'first cell ran with x={x}')"][0]["text"] == "first cell ran with x=3\n"
    assert kept["print('never')"] == []
    assert set(timings) == {"boom", "fine"} and all(t > 0 for t in timings.values())
    assert list((tmp_path / "submitit").glob("*_log.err"))  # submitit's logs of real processes


def test_a_job_that_dies_is_named_with_its_log(tmp_path):
    root = project_with(tmp_path / "project", "die", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    cluster = jobs.Cluster("local", tmp_path / "submitit", minutes=5)
    (failure,) = jobs.run_on_cluster(cluster, [jobs.Job("die", "die", {})], tmp_path / "results",
                                          root, {})
    assert failure is not None and failure.cell is None
    assert failure.error.startswith("local job ") and "did not finish" in failure.error
    assert "_log.err" in failure.error
    assert failure.output.is_file()  # papermill wrote the copy before the first cell


def test_executor_options():
    assert jobs.make_cluster("local", "w") is None
    slurm = jobs.make_cluster("slurm", "w", partition="gpu", gpus=1, cpus=8, minutes=90)
    assert (slurm.kind, slurm.folder, slurm.partition, slurm.gpus, slurm.cpus, slurm.minutes) == (
        "slurm", Path("w/submitit"), "gpu", 1, 8, 90)
    assert jobs.make_cluster("submitit-local", "w").kind == "local"
    with pytest.raises(ValueError, match="unknown executor 'sge'"):
        jobs.make_cluster("sge", "w")
    with pytest.raises(SystemExit):
        reproduce.main(["--partition", "gpu"])  # a partition without --executor slurm


@pytest.mark.slow
def test_ablation_trains_missing_runs_as_jobs(tmp_path, monkeypatch):
    """What ablation.ipynb calls with executor="submitit-local": a quick TSN run trained by
    train.ipynb in a job of its own, its data written first, its run exported."""
    monkeypatch.chdir(reproduce.project_root())
    cluster = jobs.make_cluster("submitit-local", tmp_path / "work", cpus=1, minutes=10)
    common = {"quick": True, "work_dir": str(tmp_path / "work"), "results_dir": str(tmp_path / "results"),
              "data_root": str(tmp_path / "data")}
    assert reproduce.train_runs([("tsn", 1)], common, tmp_path / "results", cluster) == []
    run = tmp_path / "results" / "runs" / "tsn_seed1"
    assert (run / "eval" / "summary.json").is_file()
    assert "train.seed=1" in (tmp_path / "results" / "runs" / "train_tsn_seed1.ipynb").read_text()
    assert (tmp_path / "data" / "benchmark.json").is_file()
    assert list((tmp_path / "work" / "submitit").glob("*_log.out"))

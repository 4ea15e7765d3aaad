"""Notebooks executed as jobs: here with papermill (:func:`execute`), or as cluster jobs of
their own through submitit (:class:`Cluster`, :func:`run_on_cluster`), a failure reported the
same way on both (:class:`Failure`: the notebook, its partly executed copy and the cell)."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


KERNEL = "python3"


def check_kernel(name: str = KERNEL) -> str:
    """Make sure the notebooks' kernel runs this interpreter (the one with ``atm_core``):
    prefer the environment's kernel specs over per-user ones and check the one found."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise RuntimeError(f"no Jupyter kernel named {name!r}: install ipykernel into "
                           f"{sys.prefix} (pip install -e .)") from None
    exe = spec.argv[0]
    plain = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if exe not in plain and Path(exe).resolve() != Path(sys.executable).resolve():
        raise RuntimeError(f"Jupyter kernel {name!r} runs {exe}, not this interpreter {sys.executable}; "
                           f"remove that kernel spec or run: {sys.executable} -m ipykernel install "
                           f"--sys-prefix --name {name}")
    return sys.executable if exe in plain else exe


@dataclass
class Failure:
    """A step that stopped: which notebook, which cell, why, and where its partial copy is."""

    notebook: Path
    output: Path
    error: str
    cell: int | None = None  # 1-based cell of the source notebook; None when no cell failed
    cells: int = 0  # cells in the source notebook
    execution_count: int | None = None
    source: str = ""  # first line of the failing cell

    def __str__(self) -> str:
        if self.cell is None:
            where = ""
        else:
            where = (f" at cell {self.cell} of {self.cells} (In [{self.execution_count}]: "
                     f"{self.source!r})")
        return f"{self.notebook}{where}: {self.error}\n    partly executed copy: {self.output}"


def execute(notebook: str | Path, output: str | Path, parameters: Mapping, cwd: str | Path = ".",
            log_output: bool = True) -> Failure | None:
    """Run ``notebook`` with papermill into ``output``; a :class:`Failure` instead of raising.
    Papermill keeps the partly executed copy at ``output`` when a cell fails. The kernel is
    stopped as soon as the last cell ends, without its exit handlers: a notebook finishes its
    files in its cells."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook, output = Path(notebook), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        # every output is in once the last cell ends; a graceful shutdown would then wait seconds
        # for the kernel's interpreter to tear down thousands of modules (torch, timm, ...)
        pm.execute_notebook(str(notebook), str(output), parameters=dict(parameters), kernel_name=KERNEL,
                            cwd=str(cwd), progress_bar=False, log_output=log_output,
                            shutdown_kernel="immediate")
    except PapermillExecutionError as e:
        cells = nbformat.read(notebook, as_version=4).cells
        index = next((i for i, c in enumerate(cells) if c.source == e.source), None)
        first = next((line for line in e.source.splitlines() if line.strip()), "")
        return Failure(notebook, output, f"{e.ename}: {e.evalue}", None if index is None else index + 1,
                       len(cells), e.exec_count, first)
    except Exception as e:  # noqa: BLE001 -- the kernel died, the notebook is unreadable, ...: report, go on
        return Failure(notebook, output, f"{type(e).__name__}: {e}")
    return None


@dataclass
class Job:
    """One notebook execution of the main job."""

    notebook: str  # stem under notebooks/
    name: str  # executed copy: results/runs/<name>.ipynb
    parameters: dict


def execute_job(job: Job, results: Path, root: Path, log_output: bool = True) -> tuple[Failure | None, float]:
    notebook = root / "notebooks" / f"{job.notebook}.ipynb"
    output = results / "runs" / f"{job.name}.ipynb"
    print(f"--- {job.notebook}.ipynb -> {output}", flush=True)
    tic = time.perf_counter()
    failure = execute(notebook, output, job.parameters, cwd=root, log_output=log_output)
    seconds = time.perf_counter() - tic
    print(f"--- {job.name}: {'ok' if failure is None else 'FAILED'} in {seconds:.0f} s", flush=True)
    return failure, seconds


def run_job(job: Job, results: Path, root: Path, timings: dict[str, float]) -> Failure | None:
    failure, timings[job.name] = execute_job(job, results, root)
    return failure


# ---------------------------------------------------------------- a cluster through submitit

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class Cluster:
    """Where training notebooks run as jobs of their own: Slurm, or submitit's local executor
    (real processes on this machine). Each job gets ``cpus`` cores (the run's ``train.threads``),
    ``gpus`` GPUs and ``minutes`` before the scheduler stops it; ``folder`` keeps submitit's
    pickles and each job's log."""

    kind: str  # "slurm" or "local"
    folder: Path
    partition: str | None = None
    gpus: int = 0
    cpus: int = 1
    minutes: int = 60

    def executor(self):
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder), cluster=self.kind)
        executor.update_parameters(timeout_min=self.minutes, gpus_per_node=self.gpus,
                                   cpus_per_task=self.cpus, tasks_per_node=1, nodes=1)
        if self.kind == "slurm" and self.partition:
            executor.update_parameters(slurm_partition=self.partition)
        return executor


def make_cluster(executor: str, work_dir: str | Path, partition: str | None = None, gpus: int = 0,
                 cpus: int = 2, minutes: int = 60) -> Cluster | None:
    """The :class:`Cluster` of an ``--executor`` choice (:data:`EXECUTORS`), its logs under
    ``<work_dir>/submitit``; ``None`` for ``local``, this machine's pool."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {EXECUTORS}")
    if executor == "local":
        return None
    return Cluster("slurm" if executor == "slurm" else "local", Path(work_dir) / "submitit", partition,
                   gpus, cpus, minutes)


def run_on_cluster(cluster: Cluster, jobs: Sequence[Job], results: Path, root: Path,
                   timings: dict[str, float]) -> list[Failure | None]:
    """Submit every job to ``cluster`` at once, wait for all, failures in job order. A notebook
    that fails is reported as by the local runner (its partly executed copy kept); a job the
    cluster stopped (time limit, node failure, cancelled) names its job id and log."""
    executor = cluster.executor()
    results, root = results.resolve(), root.resolve()
    handles = []
    for job in jobs:
        executor.update_parameters(name=f"atm-{job.name}")
        handles.append(executor.submit(execute_job, job, results, root, False))
        print(f"--- {job.name}: submitted as {cluster.kind} job {handles[-1].job_id}", flush=True)
    outcomes: list[Failure | None] = []
    for job, handle in zip(jobs, handles):
        try:
            failure, timings[job.name] = handle.result()
        except Exception as e:  # noqa: BLE001 -- submitit's errors for a job that did not finish
            reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            failure = Failure(root / "notebooks" / f"{job.notebook}.ipynb", results / "runs" / f"{job.name}.ipynb",
                              f"{cluster.kind} job {handle.job_id} did not finish: {reason} "
                              f"(log: {handle.paths.stderr})")
        print(f"--- {job.name}: {'ok' if failure is None else 'FAILED'} ({cluster.kind} job {handle.job_id})",
              flush=True)
        outcomes.append(failure)
    return outcomes



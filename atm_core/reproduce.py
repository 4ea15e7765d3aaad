"""The main job: regenerate ``results/`` on the built-in benchmark by executing the notebooks.

    python -m atm_core.reproduce            # everything (make reproduce); its time: results/runs/timings.json
    python -m atm_core.reproduce --quick    # tiny data, a few steps, the same code path
    python -m atm_core.reproduce --seeds 3  # every variant with 3 training seeds: mean ± spread
    python -m atm_core.reproduce --data-seed 1 --only atm_mul_sub tsn  # on another draw of the benchmark
    python -m atm_core.reproduce --seeds 3 --only atm_mul_sub --table-only \
        --set train.mixed_precision=no --results results/seeds_fp32  # a changed recipe, its table

Steps: write the benchmark data, then with papermill execute ``notebooks/train.ipynb`` once per
variant (TSN, TSM, TokenShift, TokenT1D and ATM with each op set, all with the same recipe),
``ablation.ipynb`` (the table, from the run outputs), ``evaluate.ipynb``,
``visualize_arithmetic.ipynb`` and ``results.ipynb``, then the model card. Executed notebooks
land in ``results/runs/`` with their outputs (tables, and figures as PNG), so that they read as
reports without running anything; training runs (with checkpoints) in ``runs/reproduce/``, whose
small artefacts (config, metrics, evaluation, class names) are copied to
``results/runs/<variant>/`` and best weights, with their recipe and model card, to
``results/checkpoints/<recipe>/`` (~1 MB each),
from which the evaluate and visualise notebooks run in a fresh clone without training.

``--data-seed N`` trains the chosen variants on the benchmark drawn again with
``data.generate.seed=N`` (the recipes unchanged, never tuned on it) into
``results/data_seeds/seed_<N>/`` and writes only their table; the main job's table note then
quotes each row's top-1 on those draws beside its own. ``--table-only`` writes only the table of
any run (no checkpoints, evaluations or figures), and ``--set KEY=VALUE`` changes every training's
recipe; the main job's note quotes the spreads of seeds runs in ``results/seeds*/`` and names the
recipe keys in which they differ from its rows.

A notebook that fails keeps its partly executed copy, outputs and error included; the runner names the notebook and the cell,
carries on with the other steps and exits non-zero at the end.

Trainings run side by side on this machine (``--jobs N``), or with ``--executor slurm`` one
cluster job per training notebook through submitit (``--partition``, ``--gpus-per-run``,
``--cpus-per-run``, ``--minutes-per-run``); the report notebooks then run here once they are
done. ``--executor submitit-local`` takes the same path with submitit's local executor (each
training a process of its own on this machine), as the tests do.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from .engine.builders import atm_options
from .jobs import EXECUTORS, Cluster, Failure, Job, check_kernel, execute_job, make_cluster, run_job, run_on_cluster
from .engine.runtime import relaunch_with_tuned_malloc
from .workbook.project import DATA_SEEDS_DIR, RESULTS_DIR, WORK_DIR, enter_project_root, project_root
from .workbook.runs import TIMINGS, MissingMetrics, export_checkpoint, export_run, read_timings
from .workbook.tables import seed_run_name
from .workbook.training import committed_checkpoint, prepare_data
from .workbook.variants import VARIANT_KEYS, by_track, variant, variant_config

def training_jobs(keys: Sequence[str], common: Mapping, seeds: int = 1, threads: int | None = None,
                  overrides: Sequence[str] = ()) -> list[Job]:
    """One train.ipynb run per variant and training seed (runs ``seed_run_name(key, seed)``),
    with ``train.threads = threads`` when given and ``overrides`` last."""
    return seed_jobs([(key, seed) for key in keys for seed in range(seeds)], common, threads, overrides)


def seed_jobs(runs: Sequence[tuple[str, int]], common: Mapping, threads: int | None = None,
              overrides: Sequence[str] = ()) -> list[Job]:
    """One train.ipynb run per ``(variant, training seed)``, see :func:`training_jobs`."""
    extra = ([] if threads is None else [f"train.threads={threads}"]) + list(overrides)
    return [Job("train", f"train_{seed_run_name(key, seed)}",
                {**common, "variant": key, "name": seed_run_name(key, seed),
                 "overrides": [f"train.seed={seed}", *extra], "progress": False})
            for key, seed in runs]


THREADS_PER_RUN = 1  # two 1-thread runs on 2 cores beat one 2-thread run after the other (benchmarks/side_by_side.py)


def side_by_side(runs: int = 0, cores: int | None = None) -> tuple[int, int]:
    """How many training runs the main job runs at once on ``cores`` CPU cores (default: this
    machine's) -- ``runs``, or with 0 one per :data:`THREADS_PER_RUN` cores -- and the threads
    each gets. With the default every run has one thread whatever the machine, so a row's figures
    do not depend on the core count."""
    cores = cores or os.cpu_count() or 1
    runs = runs or max(1, cores // THREADS_PER_RUN)
    return runs, max(1, cores // runs)


MUL_COST = 2.5  # a mul run's time over its track's non-mul run of the same epochs (docs/log-2026-12-07.md)


def training_cost(job: Job) -> float:
    """A training run's expected time in units of one epoch of a run without ``mul``: the epochs
    of its recipe, times :data:`MUL_COST` when ATM runs ``mul`` (a clip costs about the same on
    both tracks, whatever the batch). Zero for the report notebooks."""
    if job.notebook != "train":
        return 0.0
    recipe = variant(job.parameters["variant"]).recipe_config()
    return recipe.optim.epochs * (MUL_COST if "mul" in atm_options(recipe).ops else 1.0)


def longest_first(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` by :func:`training_cost`, the longest first (equal ones in their given order),
    so that runs side by side finish together rather than one long run last."""
    return sorted(jobs, key=lambda job: -training_cost(job))


def table_job(trained: Sequence[str], common: Mapping, seeds: int = 1) -> Job:
    """ablation.ipynb writing the table of the trained runs (it trains nothing)."""
    return Job("ablation", "ablation", {**common, "variants": list(trained), "train_missing": False,
                                        "seeds": seeds, "save_tables": True})


def report_jobs(trained: Sequence[str], common: Mapping, seeds: int = 1, threads: int | None = None) -> list[Job]:
    """Notebooks that read the trained runs: the table, evaluations, feature maps (independent of
    each other), then the summary, which shows the table and the feature maps. Those that run
    models do so on ``train.threads = threads`` when given (else the recipe's)."""
    model_runs = {**common, "save_figures": True, "overrides": [] if threads is None else [f"train.threads={threads}"]}
    jobs = [table_job(trained, common, seeds)]
    for key in ("tsn", "atm_mul_sub", "textures_atm_mul_sub"):  # the last two: what each ATM part carries
        if key in trained:
            jobs.append(Job("evaluate", f"evaluate_{key}", {**model_runs, "variant": key}))
    atm = [key for key in trained if variant(key).ops]
    if atm:
        jobs.append(Job("visualize_arithmetic", "visualize_arithmetic", {**model_runs, "variants": atm}))
    jobs.append(Job("results", "results", {**common, "variants": list(trained), "save_figures": True}))
    return jobs


def clean_outputs(results_dir: Path) -> None:
    """Remove what a previous run of the main job wrote (not other owners' files)."""
    for name in ("runs", "tables", "figures", "checkpoints"):
        if (results_dir / name).exists():
            shutil.rmtree(results_dir / name)


def write_model_card(results_dir: Path, quick: bool) -> Failure | None:
    """``python -m atm_core.card`` into ``results_dir`` (quick: the benchmark's model only)."""
    out = results_dir / "model_card.md"
    command = [sys.executable, "-m", "atm_core.card", "--out", str(out)]
    benchmark = variant_config("atm_mul_sub").model  # the card's benchmark row as the table's recipe builds it
    command += ["--set", f"{benchmark.name}:atm.context={benchmark.atm.context}"] if benchmark.atm.context else []
    if quick:
        command += ["--models", variant_config(VARIANT_KEYS[0]).model.name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        return Failure(Path("python -m atm_core.card"), out, f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return None


README_START, README_END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def update_readme(readme: Path, table_md: Path, minutes: float) -> bool:
    """Replace the table between the README's markers with the regenerated one."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    body = table_md.read_text().split("\n", 2)[2].strip()  # drop the title line
    block = (f"{README_START}\n{body}\n\n_Regenerated by `make reproduce` in {minutes:.0f} min "
             f"on {os.cpu_count()} CPU cores._\n{README_END}")
    head, rest = text.split(README_START, 1)
    readme.write_text(head + block + rest.split(README_END, 1)[1])
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atm_core.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and one short epoch (tests)")
    parser.add_argument("--only", nargs="+", choices=VARIANT_KEYS, metavar="VARIANT",
                        help=f"train these variants only (default: all of {', '.join(VARIANT_KEYS)})")
    parser.add_argument("--results", default=None,
                        help=f"output folder (default: {RESULTS_DIR}; with --data-seed N: {DATA_SEEDS_DIR}/seed_<N>)")
    parser.add_argument("--work", default=None,
                        help=f"training runs with checkpoints (default: {WORK_DIR}; with --data-seed N: "
                             f"{WORK_DIR}_data_seed_<N>; with --set: {WORK_DIR}_<name of --results>)")
    parser.add_argument("--data", default=None,
                        help="benchmark folder of the shapes track, the other tracks' beside it as <DATA>_<track> "
                             "(default: the recipes' data.root; with --data-seed N: data/synthetic_seed<N>)")
    parser.add_argument("--data-seed", type=int, default=None, metavar="N",
                        help="train on the benchmark drawn again with data.generate.seed=N (same recipes) and "
                             "write only the table; the main job's table note quotes it")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="train every variant with train.seed 0..N-1; the table reports mean ± spread")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="recipe overrides for every training (e.g. train.mixed_precision=no); "
                             "not with the default --results")
    parser.add_argument("--table-only", action="store_true",
                        help="write only the table of the trained runs (as --data-seed does): no "
                             "checkpoints, evaluations, figures or model card")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="training runs side by side (default: one per CPU core, one thread each), "
                             "the cores shared among them")
    parser.add_argument("--skip-training", action="store_true",
                        help="reuse the training runs already in --work; rebuild tables, evaluations and "
                             "figures in place (the training reports and the job's recorded times stay)")
    cluster = parser.add_argument_group("cluster", "training notebooks as cluster jobs through submitit")
    cluster.add_argument("--executor", choices=EXECUTORS, default="local",
                         help="local: this machine, --jobs at a time (default); slurm: one Slurm job per "
                              "training; submitit-local: one process per training through submitit")
    cluster.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    cluster.add_argument("--gpus-per-run", type=int, default=0, metavar="N", help="GPUs per training job")
    cluster.add_argument("--cpus-per-run", type=int, default=2, metavar="N",
                         help="cores per training job, its train.threads (default 2)")
    cluster.add_argument("--minutes-per-run", type=int, default=60, metavar="MIN",
                         help="time limit of a training job (default 60)")
    args = parser.parse_args(argv)
    if args.executor == "local" and (args.partition or args.gpus_per_run):
        parser.error("--partition and --gpus-per-run need --executor slurm")
    if args.data_seed is not None and (args.data_seed < 0 or args.skip_training):
        parser.error(f"--data-seed {args.data_seed}: needs a seed >= 0 and training (no --skip-training)")
    redrawn = args.data_seed is not None
    if args.overrides and args.results in (None, RESULTS_DIR) and not redrawn:
        parser.error("--set changes the recipes: write their results elsewhere with --results DIR")
    table_only = redrawn or args.table_only
    args.results = args.results or (f"{DATA_SEEDS_DIR}/seed_{args.data_seed}" if redrawn else RESULTS_DIR)
    args.work = args.work or (f"{WORK_DIR}_data_seed_{args.data_seed}" if redrawn else
                              f"{WORK_DIR}_{Path(args.results).name}" if args.overrides else WORK_DIR)
    args.data = args.data or (f"data/synthetic_seed{args.data_seed}" if redrawn else None)
    overrides = ([f"data.generate.seed={args.data_seed}"] if redrawn else []) + list(args.overrides)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    root = enter_project_root()
    check_kernel()
    results = Path(args.results)
    keys = list(args.only or VARIANT_KEYS)
    common = {"quick": args.quick, "work_dir": args.work, "results_dir": str(results),
              "data_root": args.data}
    failures: list[Failure] = []
    if args.skip_training:  # a rebuild overwrites what it remakes and keeps the training reports and times
        timings = read_timings(results)
    else:
        clean_outputs(results)
        timings = {}
    for track, group in by_track(keys).items():
        tic = time.perf_counter()
        data = prepare_data(variant_config(group[0], work_dir=args.work, quick=args.quick, data_root=args.data,
                                           overrides=overrides))
        seconds = time.perf_counter() - tic
        if not args.skip_training:
            timings[f"data_{track}"] = seconds
        print(f"benchmark data of the {track} track ready ({data}) in {seconds:.0f} s", flush=True)

    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: need at least one seed")
    failed: set[str] = set()
    parallel, threads = side_by_side(args.jobs)
    cluster = cluster_from_args(args)
    if cluster is None:
        jobs = training_jobs(keys, common, args.seeds, threads, overrides)
        print(f"training {len(jobs)} run(s), {parallel} at a time, {threads} thread(s) each", flush=True)
    else:
        jobs = training_jobs(keys, common, args.seeds, cluster.cpus, overrides)
        print(f"training {len(jobs)} run(s) as {cluster.kind} jobs, {cluster.cpus} core(s) and "
              f"{cluster.gpus} GPU(s) each; logs in {cluster.folder}", flush=True)
    if args.skip_training:
        outcomes = [None] * len(jobs)
    elif cluster is None:
        outcomes = run_jobs(jobs, results, root, timings, parallel)
    else:
        outcomes = run_on_cluster(cluster, jobs, results, root, timings)
    for job, failure in zip(jobs, outcomes):
        key, name = job.parameters["variant"], job.parameters["name"]
        if failure is None:
            failure = export_trained(Path(args.work) / name, results, name, key, args.skip_training,
                                     checkpoint=not table_only)
        if failure is not None:
            failures.append(failure)
            failed.add(key)
    trained = [key for key in keys if key not in failed]
    if not trained:
        print("no variant trained: skipping the tables and figures", file=sys.stderr)
    with ThreadPoolExecutor(1) as card_writer:  # the card reads no run: it is written meanwhile
        card = None if table_only else card_writer.submit(timed, write_model_card, results, args.quick)
        if trained and table_only:  # the main job's note quotes it
            failure = run_job(table_job(trained, common, args.seeds), results, root, timings)
            failures += [failure] if failure is not None else []
        elif trained:  # the summary (results.ipynb, last) shows what the others wrote
            *readers, summary = report_jobs(trained, common, args.seeds, threads)
            outcomes = run_jobs(readers, results, root, timings, parallel) + [run_job(summary, results, root, timings)]
            failures += [failure for failure in outcomes if failure is not None]
        if card is not None:
            failure, timings["model_card"] = card.result()
            failures += [failure] if failure is not None else []

    minutes = (time.perf_counter() - started) / 60
    timings["rebuild" if args.skip_training else "total"] = minutes * 60  # a rebuild keeps the job's total
    (results / "runs").mkdir(parents=True, exist_ok=True)
    (results / TIMINGS).write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1))
    table_md = results / "tables" / "ablation.md"
    if (not args.quick and args.only is None and not failures and "total" in timings
            and results.resolve() == (root / RESULTS_DIR).resolve()):
        update_readme(root / "README.md", table_md, timings["total"] / 60)
    print(f"\n{'rebuild' if args.skip_training else 'main job'} finished in {minutes:.1f} min; "
          f"results in {results}/", flush=True)
    if failures:
        print(f"{len(failures)} step(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def timed(step: Callable[..., Failure | None], *args) -> tuple[Failure | None, float]:
    """``step(*args)`` and the seconds it took."""
    tic = time.perf_counter()
    return step(*args), time.perf_counter() - tic


def export_trained(run_dir: Path, results: Path, name: str, key: str, with_run: bool,
                   checkpoint: bool = True) -> Failure | None:
    """Copy run ``name``'s small artefacts into ``results`` when ``with_run`` (train.ipynb exports
    them itself), and with ``checkpoint`` the best weights of variant ``key``'s seed-0 run."""
    try:
        if with_run:
            export_run(run_dir, results / "runs" / name)
        if checkpoint and name == key:
            export_checkpoint(run_dir, committed_checkpoint(key, results))
    except MissingMetrics as e:
        return Failure(run_dir, results / "runs" / name, str(e))
    return None


def run_jobs(jobs: Sequence[Job], results: Path, root: Path, timings: dict[str, float],
             parallel: int = 1) -> list[Failure | None]:
    """Execute independent ``jobs``, ``parallel`` at a time (each notebook in a process of its
    own with its share of the cores, :func:`limit_threads`; the longest first; their cell output
    is not interleaved into the log then), failures in job order."""
    if parallel <= 1:
        return [run_job(job, results, root, timings) for job in jobs]
    import multiprocessing

    threads = side_by_side(parallel)[1]
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"),
                             initializer=limit_threads, initargs=(threads,)) as pool:
        futures = {job.name: pool.submit(execute_job, job, results, root, False) for job in longest_first(jobs)}
        outcomes = [futures[job.name].result() for job in jobs]
    for job, (_, seconds) in zip(jobs, outcomes):
        timings[job.name] = seconds
    return [failure for failure, _ in outcomes]


def limit_threads(threads: int) -> None:
    """Give the notebook kernels this process starts ``threads`` intra-op threads (they inherit
    its environment): notebooks side by side that each took every core would slow each other
    down far more than they gain. A run's own ``train.threads`` still applies to its training."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def cluster_from_args(args: argparse.Namespace) -> Cluster | None:
    return make_cluster(args.executor, args.work, args.partition, args.gpus_per_run, args.cpus_per_run,
                        args.minutes_per_run)


def train_runs(runs: Sequence[tuple[str, int]], common: Mapping, results: str | Path,
               cluster: Cluster | None = None, parallel: int = 1) -> list[Failure]:
    """Train ``(variant, seed)`` runs with train.ipynb (each exports its run to ``results``),
    on ``cluster`` or ``parallel`` at a time here, each track's data written first; the
    failures. What ablation.ipynb calls."""
    root, results = project_root(), Path(results)
    for group in by_track(key for key, _ in runs).values():
        prepare_data(variant_config(group[0], work_dir=common["work_dir"], quick=common["quick"],
                                    data_root=common["data_root"]))
    threads = cluster.cpus if cluster is not None else side_by_side(parallel)[1]
    jobs = seed_jobs(runs, common, threads)
    timings: dict[str, float] = {}
    if cluster is None:
        outcomes = run_jobs(jobs, results, root, timings, parallel)
    else:
        outcomes = run_on_cluster(cluster, jobs, results, root, timings)
    return [failure for failure in outcomes if failure is not None]


if __name__ == "__main__":
    relaunch_with_tuned_malloc()  # the notebook kernels inherit the environment
    raise SystemExit(main())

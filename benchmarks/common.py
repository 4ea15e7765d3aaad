"""Shared pieces of the benchmark scripts: timing, CPU peak memory, the matmul rate, records.

Every script measures the things it compares in one process, interleaved (A, B, B, A, ...),
and reports medians and ratios, because the machine these run on is shared and noisy. Each
script writes ``results/bench/<name>.json`` and regenerates ``results/benchmarks.md`` from all
of them (``benchmarks/report.py``), so no figure in that file is ever typed by hand.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from atm_core.engine.runtime import TUNED_MALLOC, relaunch_with_tuned_malloc

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "bench"


def setup(threads: int, malloc: str) -> dict:
    """Thread count and allocator policy; returns what was applied, for the record.

    ``malloc="keep"`` re-executes the script once with the allocator setting the training
    commands use (``atm_core.engine.runtime.TUNED_MALLOC``): glibc then keeps freed memory for
    reuse instead of returning it to the kernel, where each large tensor would be page-faulted in
    again on every call (a third of an ATM block's forward time on this machine). The PyTorch
    CPU performance guide advises a caching allocator (jemalloc, tcmalloc) for the same reason.
    Every implementation measured runs in the same process, under the same setting.
    """
    if malloc == "keep":
        relaunch_with_tuned_malloc(cpu_only=False)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tuned = {k: os.environ[k] for k in TUNED_MALLOC if k in os.environ}
    return {"threads": threads, "malloc": "glibc, " + (", ".join(f"{k}={v}" for k, v in tuned.items())
                                                       if tuned else "defaults")}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Seconds per call of each function, run in alternating order every repeat."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over repeats of slow/fast, each pair taken in the same repeat (so the same load)."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes held through PyTorch's CPU allocator while ``fn`` runs, above the start level.

    Uses the profiler's allocator events (``profile_memory=True``): every allocation and free
    made by any op, with its size and time, so the running sum's maximum is the peak. Memory
    that kernels take outside PyTorch's allocator (MKL's own scratch) is not seen.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        result = fn()
        del result
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


def matmul_engines(size: int = 2048) -> tuple[dict[str, Callable[[], object]], int]:
    """The fp32 GEMMs of the two engines PyTorch uses on CPU, as functions, and their MACs.

    ``torch.mm`` calls MKL's sgemm; convolutions (and so a 1x1 convolution, which is a GEMM)
    call oneDNN. On some CPUs (MKL on AMD) the two differ by 2x, so both are measured and the
    faster one is taken as the machine's fp32 matmul rate.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    x = a.view(1, size, 1, size).permute(0, 3, 1, 2)  # (1, K, M, 1) channels-last: rows of a
    weight = b.t().contiguous().view(size, size, 1, 1)
    conv = F.conv2d(x, weight).permute(0, 2, 3, 1).reshape(size, size)
    torch.testing.assert_close(conv, a @ b, rtol=1e-3, atol=1e-2)
    return {"torch.mm (MKL sgemm)": lambda: torch.mm(a, b),
            "1x1 conv (oneDNN)": lambda: F.conv2d(x, weight)}, size**3


def matmul_rates(engines: dict[str, Callable[[], object]], macs: int, repeats: int = 7
                 ) -> dict[str, float]:
    """fp32 GEMM rate in GMAC/s of each of ``matmul_engines``."""
    times = interleaved(engines, repeats, warmup=2)
    return {name: macs / median(t) / 1e9 for name, t in times.items()}


def load_average() -> float:
    return os.getloadavg()[0]


def machine(applied: dict) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    config = torch.__config__.show()
    libs = [line.strip(" -") for line in config.splitlines()
            if "Math Kernel Library" in line or "MKL-DNN" in line]
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("timm", "fvcore"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "os": platform.platform(),
            "versions": versions, "libraries": libs, **applied}


def command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def save(name: str, record: dict) -> Path:
    """Write ``record`` (its title first, then the command line and date of this run) to
    ``results/bench/<name>.json`` and regenerate ``results/benchmarks.md``."""
    from report import write_report  # benchmarks/ is on sys.path when a script runs

    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{name}.json"
    stamped = {"title": record["title"], "command": command(),
               "date": datetime.datetime.now().isoformat(timespec="seconds"), **record}
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    write_report()
    return path

"""What every bench shares: timing, the machine it ran on, the printed table and the JSON.

A bench script builds its inputs, times s4g and its baseline in the same process with
`timed`, prints `table(...)`, and calls `write_result(name, figures)`, which stores the
figures with the machine (CPUs, load average, GPU, library versions), the exact command and
the source (commit, s4g's version, whether the tree had uncommitted changes) under
benches/results/<name>.json — the file behind every figure docs/speed.md quotes.
Run benches from the checkout root: `python benches/bench_x.py ...`.

Every bench parses its options with `parse(parser, smoke={...})`, which adds `--smoke`: sizes
that run in seconds, so CI can run every bench (`scripts/bench-smoke`). A smoke run's JSON
goes to $S4G_BENCH_RESULTS (or a temporary folder), never over the committed results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CHECKOUT = Path(__file__).resolve().parents[1]
SMOKE = False  # set by parse(): this run is a smoke run, its figures are not results


def parse(parser: argparse.ArgumentParser, smoke: dict[str, Any], argv: Sequence[str] | None = None
          ) -> argparse.Namespace:
    """parser's options plus `--smoke`, which swaps in the `smoke` defaults (dest -> value);
    options given on the command line still win."""
    global SMOKE
    parser.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI); figures discarded")
    args = parser.parse_args(argv)
    if args.smoke:
        SMOKE = True
        parser.set_defaults(**smoke)
        args = parser.parse_args(argv)
    return args


def source() -> dict[str, Any]:
    """What produced the figures: the checkout's commit, whether its tracked files differed
    from it, the version of the s4g that was imported and whether it was this checkout's."""
    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(CHECKOUT), *cmd], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    try:
        import s4g
    except ImportError:
        return {"commit": commit, "clean": None if status is None else status == "", "s4g_version": None}
    return {"commit": commit, "clean": None if status is None else status == "", "s4g_version": s4g.__version__,
            "s4g_from_checkout": Path(s4g.__file__).resolve().is_relative_to(CHECKOUT)}


@dataclass(frozen=True)
class Timing:
    """Wall seconds of each run (best and median), CPU seconds of the best run (all threads of
    this process), and the last run's result."""

    best: float
    median: float
    cpu: float
    result: Any


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0) -> Timing:
    """Run fn() `warmup` times untimed, then `repeats` times timed."""
    for _ in range(warmup):
        fn()
    runs, result = [], None
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    best = min(runs)
    return Timing(best[0], statistics.median(r[0] for r in runs), best[1], result)


def machine() -> dict[str, Any]:
    """Where the bench ran: CPUs, 1-minute load average, processor, GPU, library versions."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS", "unset"),
    }
    if "torch" in sys.modules:  # benches that use torch report its version and the GPU
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


def banner(**settings: Any) -> None:
    """Print the bench's settings and the machine on one line."""
    m = machine()
    gpu = f" gpu={m['gpu']}" if "gpu" in m else ""
    shown = " ".join(f"{k}={v}" for k, v in settings.items())
    print(f"{shown} cpus={m['cpus']} load={m['load_avg_1min']} {m['processor']}{gpu}")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under a header, columns right-aligned except the first."""
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def results_dir() -> Path:
    """benches/results, or for a smoke run $S4G_BENCH_RESULTS (default: a temporary folder)."""
    if not SMOKE:
        return RESULTS
    return Path(os.environ.get("S4G_BENCH_RESULTS") or Path(tempfile.gettempdir()) / "s4g-bench-smoke")


def write_result(name: str, figures: dict[str, Any], out: str | os.PathLike | None = None) -> Path:
    """Write {"bench", "command", "machine", "source", "smoke", "finished", **figures} to
    benches/results/<name>.json (or `out`); returns the path."""
    path = Path(out) if out is not None else results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": name,
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "source": source(),
        "smoke": SMOKE,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        **figures,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path

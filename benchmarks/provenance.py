"""What a benchmark's result file needs to be believed later: commit, date, machine, load.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module sits beside them and
is imported by its plain name.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The short commit, with ``+uncommitted`` when depthlib/ differs from it."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "depthlib"],
                               capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+uncommitted" if dirty else "")


def cpu_kind() -> str:
    """The CPU's model and whether it has bf16 units (AMX, AVX512-BF16): speeds depend on them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown")  # fmt: skip
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))  # fmt: skip
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{model}, " + (" + ".join(units) if units else "no bf16 units")


def provenance() -> dict:
    """Commit, date, machine, CPU kind, torch, threads and the load average at this moment."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores {platform.machine()}, "
        + (f"GPU {gpu}" if gpu else "no GPU"),
        "cpu": cpu_kind(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load": "/".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def refuse_to_replace(path: str | Path, overwrite: bool) -> Path:
    """A results file is a measurement: replacing it takes ``--overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it (or --out another file).")
    return path

"""Small helpers shared by the benchmark modules."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    values = np.asarray(seconds) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def run_in_checkout(checkout: Path, program: str, *, unset: tuple[str, ...] = (), path: tuple[Path, ...] = ()) -> str:
    """The standard output of ``python -c program`` run with ``checkout``'s code (``path``: folders before it).

    ``unset``: environment variables the program must not inherit. A failure
    raises ``subprocess.CalledProcessError`` with the program's stderr.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (*path, checkout)))}
    for name in unset:
        env.pop(name, None)
    return subprocess.run([sys.executable, "-c", program], cwd=checkout, env=env, capture_output=True, text=True, check=True).stdout


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    versions = {"python": platform.python_version()}
    for name in ("torch", "faiss", "sentence_transformers", "onnxruntime", "fastapi", "uvicorn"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is just not reported
            pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(memory_kib / 1024**2, 1), "versions": versions}


class Timer:
    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started

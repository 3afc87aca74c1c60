"""Small shared helpers: seeding, device choice, memory figures (psutil), atomic writes."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import psutil

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) — the one seed setter of WeakSeg."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str = "auto"):
    """``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` -> ``torch.device``; clear error when unavailable."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"Device '{device}' was requested but CUDA is not available on this machine "
                             f"(torch {torch.__version__}). Use --device cpu or auto.")
        return torch.device(device)
    if device == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("Device 'mps' was requested but Apple MPS is not available. Use --device cpu.")
        return torch.device("mps")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"Unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps.")


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB (psutil: Linux, macOS and Windows)."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB: Windows' peak working set, Linux's ``VmHWM``;
    elsewhere (macOS) the current RSS, a lower bound."""
    info = psutil.Process().memory_info()
    peak = getattr(info, "peak_wset", None)
    if peak is not None:
        return peak / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return info.rss / 2**20


def read_json_object(path: str | os.PathLike, name: str) -> dict:
    """The JSON object in ``path``.  Errors name the file as ``name``: FileNotFoundError when it is
    absent, ValueError when it is not valid JSON (with the line) or holds something else than an object."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing ('{path}'); check the path.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is corrupted (invalid JSON at line {exc.lineno}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} must hold a JSON object, got {type(data).__name__}.")
    return data


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, psutil.cpu_count() or 1)


def configure_threads(requested: int | None = None, reserve: int = 0) -> int:
    """Set torch's CPU threads: ``requested`` when given; else ``OMP_NUM_THREADS`` when set (torchrun sets
    it per rank); else :func:`choose_num_threads`.  Returns the number of threads in use."""
    import torch

    if requested:
        torch.set_num_threads(int(requested))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(choose_num_threads(reserve))
    return torch.get_num_threads()


def choose_num_threads(reserve: int = 0, sample_s: float = 0.3) -> int:
    """Threads for torch: the cores not busy with other processes now, minus ``reserve``, at least 1.

    On a small machine, using every core while another process computes makes training several times
    slower than one thread (OpenMP threads wait for the one that shares its core); this counts busy cores
    over ``sample_s`` seconds and leaves them alone.  ``reserve`` keeps cores free for a GUI (Slicer).
    """
    cores = usable_cores()
    busy = psutil.cpu_percent(interval=sample_s) / 100.0 * (psutil.cpu_count() or cores)
    free = cores - int(busy + 0.5)
    threads = max(1, min(cores, free) - max(0, reserve))
    logger.debug("Threads: %d of %d cores (%.1f busy, %d reserved)", threads, cores, busy, reserve)
    return threads


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    import torch

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # pragma: no cover - a probe missing from this torch build
            continue
    return False

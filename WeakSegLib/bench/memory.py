"""Memory used by one benchmark method: the process RSS sampled in a background thread, and peak CUDA memory."""

from __future__ import annotations

import gc
import threading

from WeakSegLib.utils import current_rss_mb, peak_rss_mb


class MemorySampler:
    """Samples the RSS in a background thread while a block runs: ``start_mb``, ``peak_mb``, ``increase_mb`` (MB).

    Where the device is CUDA it also resets and reads ``torch.cuda.max_memory_allocated``
    (``peak_gpu_mb``).  Use as a context manager; :meth:`report` gives the figures for ``bench.json``.
    """

    def __init__(self, interval_s: float = 0.05, cuda: bool = False):
        self.interval_s = interval_s
        self.cuda = cuda
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = current_rss_mb()
        self.peak_mb = value if self.peak_mb is None else max(self.peak_mb, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> MemorySampler:
        gc.collect()
        self.start_mb = current_rss_mb()
        self.peak_mb = self.start_mb
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._run, name="weakseg-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20

    @property
    def increase_mb(self) -> float | None:
        """Peak RSS during the block minus the RSS when it started (None before the block ran)."""
        if self.start_mb is None or self.peak_mb is None:
            return None
        return self.peak_mb - self.start_mb

    def report(self) -> dict:
        """``peak_rss_mb``, ``rss_increase_mb``, the process-wide ``process_peak_rss_mb`` and ``peak_gpu_mb``."""
        rnd = lambda v: None if v is None else round(float(v), 1)  # noqa: E731
        return {"peak_rss_mb": rnd(self.peak_mb), "rss_increase_mb": rnd(self.increase_mb),
                "process_peak_rss_mb": rnd(peak_rss_mb()), "peak_gpu_mb": rnd(self.peak_gpu_mb)}

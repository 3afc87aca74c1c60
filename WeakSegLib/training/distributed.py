"""Data-parallel training with ``torchrun`` (PyTorch DDP), detected from the environment.

* ``torchrun --nproc-per-node N -m WeakSegLib train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
  WeakSeg then initialises the process group itself: NCCL on CUDA (one GPU per local rank), gloo on
  the CPU (or with ``--device cpu``), with a timeout (``WEAKSEG_DDP_TIMEOUT`` seconds, default
  :data:`DEFAULT_TIMEOUT_S`) so a rank that hangs fails the job instead of hanging it.
* **Batch**: the planned (or configured) ``batch_size`` is the *total* batch of one optimisation step;
  each rank draws its share (:meth:`DistributedContext.local_plan`) and DDP averages the gradients, so N
  ranks take steps on the same total batch as one process (different random patches).  As in nnU-Net's
  DDP, the step minimises the mean of the ranks' losses, each a mean over its own share: for terms
  averaged over labelled voxels this weighs the ranks' shares equally rather than every voxel.
* **Cases** are sharded by rank (round-robin over cases, :meth:`DistributedContext.shard`), never
  splitting a volume: a volume-level constraint (size range, tag, box, centroid) is always computed
  on a whole volume by the rank that holds it.  Each rank's volume batch is one of its own volumes,
  so with N ranks a step sees N whole volumes for the global terms instead of one.  A rank samples
  uniformly from its own shard, so with uneven shards (5 cases, 2 ranks) the cases of the smaller
  shard are drawn a little more often.
* **Normalisation**: the network (MONAI DynUNet) uses instance norm, which is per sample and has no
  running statistics: nothing to synchronise, and the normalisation does not depend on how the batch
  is split.
  A network with batch norm gets ``SyncBatchNorm`` on CUDA; on the CPU (where PyTorch has no
  SyncBatchNorm) each rank normalises its own share and rank 0's running statistics are broadcast
  at every forward (DDP's ``broadcast_buffers``).
* Every rank holds the same weights: DDP broadcasts rank 0's at the start, every step applies the
  same averaged gradient, and :meth:`DistributedContext.verify_replicas` checks it at the end
  (a SHA-256 of each rank's weights, recorded in the model's summary).
* Only rank 0 writes checkpoints, the model, the history and the progress stream; other ranks log
  warnings and errors only.  A checkpoint holds every rank's sampler and RNG state, and on
  ``--resume`` rank 0 reads it and broadcasts it, so a restart of all ranks continues exactly
  where the job stopped (the files need only be on rank 0's machine).
* **Failures**: every rank beats a heartbeat into the rendezvous store.  When a collective fails
  (a peer died: connection reset; or hung: ``WEAKSEG_DDP_TIMEOUT``), the rank names the lost rank(s)
  from their heartbeats, or quotes the error a failing rank recorded, and raises one clear error.
  Under ``torchrun`` the agent also stops the surviving ranks of its machine as soon as one exits.
* **End of a run**: every rank drops its DDP wrapper (collected at once, while the process group is
  alive) and waits for the others (rank 0 writes the model last).  The group is destroyed at exit,
  after collecting any wrapper left unreachable: a DDP reducer freed only during interpreter
  finalisation, after its group, could abort a finished rank in gloo's threads ("terminate
  called without an active exception").  ``train()`` can run again in the same process.

Without ``WORLD_SIZE`` > 1 everything is a no-op and the single-process path is unchanged.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import functools
import gc
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 180.0
HEARTBEAT_S = 1.0
# A peer whose heartbeat has not moved for this long is reported lost.
LOST_AFTER_S = 4.0
# A rank whose heartbeat has never been seen counts as lost only after this long (it may be starting up).
FIRST_BEAT_GRACE_S = 60.0
# How long ranks wait for each other before the first collective (data preparation can be slow).
STARTUP_WAIT_S = 3600.0

_COMM_PATTERNS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "broken pipe",
                  "timed out", "timeout", "processgroup", "c10d", "socket", "peer")


class DistributedError(RuntimeError):
    """A distributed run cannot go on (a peer is lost, the replicas diverged, bad torchrun setup)."""


def timeout_seconds() -> float:
    """``WEAKSEG_DDP_TIMEOUT`` (seconds) or :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get("WEAKSEG_DDP_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"WEAKSEG_DDP_TIMEOUT must be a positive number of seconds, got '{raw}'.")
    return value


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors (names, dtypes, shapes and bytes), independent of the device."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_communication_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from a failed collective (gloo / NCCL / c10d store), not from the model or data."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    if isinstance(exc, DistributedError):
        return True
    if type(exc) is not RuntimeError:    # CUDA OOM, ValueError, TrainingError, ... are the rank's own failure
        return False
    text = str(exc).lower()
    return any(p in text for p in _COMM_PATTERNS)


# ---------------------------------------------------------------------------------------------
class _PeerMonitor:
    """Heartbeats in the rendezvous store: who is alive, and what a failing rank said before it died."""

    def __init__(self, host: str, port: int, rank: int, world: int, prefix: str):
        self.rank, self.world, self.prefix = rank, world, prefix
        self.store = dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=30))
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.store_lost: str | None = None
        self._seen: dict[int, tuple[int, float]] = {}
        self._passes: dict[str, int] = {}
        self.thread = threading.Thread(target=self._beat, name="weakseg-ddp-heartbeat", daemon=True)
        self.thread.start()

    def _key(self, kind: str, rank: int) -> str:
        return f"{self.prefix}{kind}/{rank}"

    def _call(self, fn: Callable, *args):
        with self.lock:
            return fn(*args)

    def _beat(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._call(self.store.add, self._key("beat", self.rank), 1)
            except Exception as exc:  # noqa: BLE001 - the store's host is gone: nothing left to beat into
                self.store_lost = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                return
            self.stop_event.wait(HEARTBEAT_S)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=2 * HEARTBEAT_S)

    def beats(self) -> dict[int, int]:
        return {r: int(self._call(self.store.add, self._key("beat", r), 0)) for r in range(self.world)}

    def lost(self, min_wait: float = 0.0) -> list[int]:
        """Ranks whose heartbeat has not moved for :data:`LOST_AFTER_S` (waiting at most ``min_wait`` to know)."""
        deadline = time.monotonic() + min_wait
        while True:
            now = time.monotonic()
            for r, count in self.beats().items():
                if r not in self._seen or self._seen[r][0] != count:
                    self._seen[r] = (count, now)
            lost = [r for r, (count, since) in self._seen.items() if r != self.rank
                    and now - since >= (LOST_AFTER_S if count else FIRST_BEAT_GRACE_S)]
            if lost or now >= deadline:
                return sorted(lost)
            time.sleep(min(HEARTBEAT_S / 2, max(deadline - now, 0.0)))

    def record_failure(self, message: str) -> None:
        try:
            self._call(self.store.set, self._key("failed", self.rank), message[:800])
        except Exception:  # noqa: BLE001 - best effort: the peers will report this rank as lost instead
            pass

    def failures(self) -> dict[int, str]:
        out = {}
        for r in range(self.world):
            key = self._key("failed", r)
            if r != self.rank and self._call(self.store.check, [key]):
                out[r] = self._call(self.store.get, key).decode(errors="replace")
        return out

    def wait_all(self, name: str, timeout_s: float) -> None:
        """A store barrier that waits for slow ranks as long as they are alive, and fails fast when one is lost."""
        # Every rank passes the same barriers in the same order: the n-th pass of a name has its own key,
        # so a process that trains twice does not find the first run's barrier already full.
        count = self._passes[name] = self._passes.get(name, 0) + 1
        key = f"{self.prefix}barrier/{name}/{count}"
        self._call(self.store.add, key, 1)
        start = time.monotonic()
        while int(self._call(self.store.add, key, 0)) < self.world:
            failed = self.failures()
            lost = self.lost()
            if failed or lost:
                raise DistributedError(_lost_message(self.rank, self.world, lost, failed, None,
                                                     f"while waiting for all ranks ({name})"))
            if time.monotonic() - start > timeout_s:
                raise DistributedError(f"Ranks did not all reach '{name}' within {timeout_s:.0f} s.")
            time.sleep(0.2)


def _lost_message(rank: int, world: int, lost: list[int], failed: dict[int, str], store_lost: str | None,
                  cause: str | None, timeout_s: float | None = None) -> str:
    parts = []
    for r, msg in sorted(failed.items()):
        parts.append(f"rank {r} failed: {msg}")
    dead = [r for r in lost if r not in failed]
    if dead:
        who = ("rank " if len(dead) == 1 else "ranks ") + ", ".join(str(r) for r in dead)
        parts.append(f"{who} lost (no heartbeat for {LOST_AFTER_S:.0f} s: killed, out of memory, stopped, "
                     f"or its machine or network went down)")
    if store_lost and not parts:
        parts.append(f"rank 0 / the rendezvous host lost (its store is unreachable: {store_lost})")
    if not parts:
        limit = "" if timeout_s is None else f" within WEAKSEG_DDP_TIMEOUT={timeout_s:.0f} s"
        parts.append(f"a peer rank stopped answering{limit} (hung, or far slower than the others)")
    text = f"Distributed training stopped: {'; '.join(parts)}. Seen from rank {rank} of {world}"
    if cause:
        text += f", {cause}" if cause.startswith("while") else f", whose last collective operation failed: {cause}"
    return text + "."


_PROCESS: dict = {"monitor": None, "owned": False, "broken": False}


def _shutdown_process_group() -> None:
    monitor = _PROCESS.get("monitor")
    if monitor is not None:
        monitor.stop()
        _PROCESS["monitor"] = None
    if _PROCESS.get("owned") and dist.is_initialized():
        # Free unreachable DDP wrappers first: a reducer collected later, during interpreter finalisation,
        # takes gloo's last references down with it while its work threads still hold Python objects, and
        # the process aborts ("terminate called without an active exception", SIGABRT) after a good run.
        gc.collect()
        # After a failure only gloo's group is safe to destroy (NCCL's watchdog tears its group down itself).
        if not _PROCESS.get("broken") or dist.get_backend() == "gloo":
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        _PROCESS["owned"] = False


# ---------------------------------------------------------------------------------------------
@dataclass
class DistributedContext:
    """This process's place in a ``torchrun`` job (or a disabled context for a single process)."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    backend: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    replica_digests: list[str] = field(default_factory=list)

    @classmethod
    def from_environment(cls, device: str = "auto") -> DistributedContext:
        """Join the job ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), else a no-op context."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise DistributedError(f"WORLD_SIZE={world} is set but {', '.join(missing)} is not: launch with "
                                   f"'torchrun --nproc-per-node N -m WeakSegLib train ...' (or unset WORLD_SIZE).")
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        from WeakSegLib.utils import resolve_device

        requested = (os.environ.get("WEAKSEG_DDP_DEVICE") or device or "auto").lower()
        kind = resolve_device(requested).type
        if kind == "mps":
            raise ValueError("Data-parallel training does not support MPS; use --device cpu with torchrun.")
        if kind == "cuda":
            if local >= torch.cuda.device_count():
                raise ValueError(f"Local rank {local} needs GPU {local}, but {torch.cuda.device_count()} GPU(s) are "
                                 f"visible: use --nproc-per-node {torch.cuda.device_count()} or fewer.")
            torch.cuda.set_device(local)
            dev, backend = torch.device("cuda", local), "nccl"
        else:
            dev, backend = torch.device("cpu"), "gloo"
        timeout = timeout_seconds()
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
            _PROCESS.update(owned=True, broken=False)
            if not _PROCESS.get("atexit"):
                atexit.register(_shutdown_process_group)
                _PROCESS["atexit"] = True
        backend = dist.get_backend()
        if _PROCESS.get("monitor") is None:
            prefix = (f"weakseg/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/"
                      f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/")
            try:
                _PROCESS["monitor"] = _PeerMonitor(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                                   rank, world, prefix)
            except Exception as exc:  # noqa: BLE001 - training works without it, errors are just less precise
                logger.warning("DDP heartbeat unavailable (%s); a lost rank will be reported without its number.",
                               exc)
        if rank != 0:
            logging.getLogger("WeakSegLib").setLevel(logging.WARNING)   # rank 0 logs for the job
        logger.info("DDP: rank %d of %d (local rank %d), backend %s, timeout %.0f s", rank, world, local, backend,
                    timeout)
        return cls(True, rank, world, local, dev, backend, timeout)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _monitor(self) -> _PeerMonitor | None:
        return _PROCESS.get("monitor") if self.enabled else None

    # ------------------------------------------------------------------ data
    def shard(self, items: list) -> list:
        """This rank's share of the cases (round-robin; every rank gets at least one)."""
        if not self.enabled:
            return list(items)
        if len(items) < self.world_size:
            raise ValueError(f"{len(items)} case(s) cannot be sharded over {self.world_size} processes: use at "
                             f"most {len(items)} processes (--nproc-per-node) or add cases.")
        return [c for i, c in enumerate(items) if i % self.world_size == self.rank]

    def local_batch_size(self, total: int) -> int:
        """This rank's share of a total batch (shares differ by at most one; at least one sample per rank)."""
        if not self.enabled:
            return int(total)
        total = int(total)
        if total < self.world_size:
            if self.is_main:
                logger.warning("Batch size %d is smaller than the %d ranks: each rank takes 1 sample, so the total "
                               "batch is %d.", total, self.world_size, self.world_size)
            return 1
        return total // self.world_size + (1 if self.rank < total % self.world_size else 0)

    def local_plan(self, plan):
        """The plan with this rank's share of the batch (the model keeps the total batch in its plan)."""
        if not self.enabled:
            return plan
        local = self.local_batch_size(plan.batch_size)
        if self.is_main:
            logger.info("DDP: total batch %d over %d ranks (%d on rank 0)", plan.batch_size, self.world_size, local)
        return dataclasses.replace(plan, batch_size=local)

    # ------------------------------------------------------------------ network
    def wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around ``network`` (rank 0's initial weights are broadcast to every rank)."""
        if not self.enabled:
            return network
        from torch.nn.modules.batchnorm import _BatchNorm
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device is not None and self.device.type == "cuda"
        if cuda and any(isinstance(m, _BatchNorm) for m in network.modules()):
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        # Data preparation may take much longer on one rank than another: wait for every rank (while they
        # are alive) before DDP's first broadcast, which is bound by the collective timeout.
        if self._monitor is not None:
            self._monitor.wait_all("network", STARTUP_WAIT_S)
        # DDP's default buffer sync is a no-op for buffer-free networks (DynUNet with instance norm).
        return DistributedDataParallel(network, device_ids=[self.local_rank] if cuda else None)

    @staticmethod
    def unwrap(network: torch.nn.Module) -> torch.nn.Module:
        return network.module if hasattr(network, "module") else network

    def verify_replicas(self, network: torch.nn.Module) -> list[str]:
        """SHA-256 of the weights on every rank (all equal, else :class:`DistributedError`)."""
        if not self.enabled:
            return []
        digest = state_digest(self.unwrap(network).state_dict())
        digests: list = [None] * self.world_size
        dist.all_gather_object(digests, digest)
        self.replica_digests = [str(d) for d in digests]
        if len(set(digests)) != 1:
            raise DistributedError(f"The ranks' weights diverged (SHA-256 per rank: {self.replica_digests}); "
                                   f"this is a bug, please report it with the command line.")
        if self.is_main:
            logger.info("DDP: weights identical on all %d ranks (sha256 %s)", self.world_size, digest[:16])
        return self.replica_digests

    def summary(self) -> dict:
        """What the model's summary records about the distributed run (nothing for a single process)."""
        if not self.enabled:
            return {}
        return {"ddp": {"world_size": self.world_size, "backend": self.backend,
                        "weights_sha256_per_rank": list(self.replica_digests)}}

    # ------------------------------------------------------------------ collectives
    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def all_finite(self, value: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(value.detach()).all())
        return not self.any(not finite)

    def same(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (time budget, learning-rate schedule: every rank must agree)."""
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def finish(self) -> None:
        """End of a run under DDP (call it once nothing holds the DDP wrapper any more): collect the wrapper
        now, while its process group is alive, and wait until every rank has finished (rank 0 writes the
        model last).  The group itself stays for a later run in the same process; it is destroyed at exit."""
        if not self.enabled:
            return
        gc.collect()
        if self._monitor is not None:
            self._monitor.wait_all("finished", STARTUP_WAIT_S)

    # ------------------------------------------------------------------ checkpoints
    def rank_states(self, states: dict) -> dict:
        """For a checkpoint: ``{"ranks": [every rank's states]}`` (a collective; ``{}`` for a single process).

        ``states`` is what differs between ranks (sampler and RNG streams, a mode's per-volume state for
        the rank's own shard); :meth:`load_checkpoint` gives each rank its own entry back.
        """
        if not self.enabled:
            return {}
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, dict(states))
        return {"ranks": gathered}

    def load_checkpoint(self, path: str | os.PathLike) -> dict | None:
        """Rank 0 reads the checkpoint (``weights_only``) and broadcasts it; ``None`` when there is none.

        Under DDP the entries saved per rank (``sampler``, ``torch_rng``, ``mode``: see :meth:`rank_states`)
        are this rank's own, so a restart of all ranks continues every rank where it stopped.
        """
        path = Path(path)
        if not self.enabled:
            return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        box = [torch.load(path, map_location="cpu", weights_only=True) if self.is_main and path.exists() else None]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
        if state is None:
            return None
        ranks = state.get("ranks")
        if ranks is not None and len(ranks) == self.world_size:
            state = {**state, **ranks[self.rank]}
        elif self.rank != 0:
            # Another number of ranks: rank 0 continues its saved streams, the others keep fresh seeded ones
            # (a mode's per-volume state is rank 0's: the other ranks' volumes start from their annotations).
            state = {k: v for k, v in state.items() if k not in ("sampler", "torch_rng")}
            if self.rank == 1:
                logger.warning("The checkpoint was written by %s rank(s), this job has %d: training continues, "
                               "but not bit-for-bit as it would have.",
                               len(ranks) if ranks is not None else 1, self.world_size)
        return state

    # ------------------------------------------------------------------ failures
    def explain_failure(self, exc: BaseException) -> str | None:
        """A clear message when ``exc`` means a peer is lost (``None``: this rank's own error, now recorded
        in the store so that the other ranks can quote it)."""
        if not self.enabled:
            return None
        monitor = self._monitor
        if not is_communication_error(exc):
            if monitor is not None:
                first = (str(exc).strip().splitlines() or [""])[0]
                monitor.record_failure(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
            return None
        _PROCESS["broken"] = True
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "] " in cause:      # drop gloo's source-file prefix
            cause = cause.split("] ", 1)[1]
        cause = cause.split(". This is typically", 1)[0][:300]
        if isinstance(exc, DistributedError):
            message = str(exc)
        elif monitor is None:
            message = _lost_message(self.rank, self.world_size, [], {}, None, cause, self.timeout_s)
        else:
            lost, failed = [], {}
            try:
                lost = monitor.lost(min_wait=LOST_AFTER_S + HEARTBEAT_S)
                failed = monitor.failures()
            except Exception as store_exc:  # noqa: BLE001 - the store itself is gone
                monitor.store_lost = monitor.store_lost or str(store_exc).strip().splitlines()[0]
            message = _lost_message(self.rank, self.world_size, lost, failed, monitor.store_lost, cause,
                                    self.timeout_s)
        _shutdown_process_group()
        return message


def reports_lost_ranks(error_cls: type[Exception]) -> Callable:
    """Decorator for a trainer method: under DDP, a failed collective becomes ``error_cls`` with a message
    naming the lost rank(s); a rank's own error is recorded for its peers and re-raised unchanged."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                ctx = getattr(self, "dist", None)
                if not isinstance(ctx, DistributedContext) or not ctx.enabled:
                    raise
                message = ctx.explain_failure(exc)
                if message is None:       # this rank's own error (recorded for the peers): unchanged
                    raise
                from WeakSegLib.model import CHECKPOINT

                out_dir = getattr(self, "out_dir", None)
                if out_dir is not None and (Path(out_dir) / CHECKPOINT).is_file():
                    message += (f" The last checkpoint is in {out_dir}: fix the cause and restart every rank with the "
                                f"same command plus --resume.")
                elif out_dir is not None:
                    message += " No checkpoint was written yet: fix the cause and start the job again."
                raise error_cls(message) from exc
        return wrapper

    return decorate

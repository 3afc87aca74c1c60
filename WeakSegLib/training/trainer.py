"""The trainer: a loop over small overridable hooks (nnU-Net style).

``build_network`` -> ``build_objective`` -> ``configure_optimizers`` -> repeat ``train_step`` (and
``on_epoch_end`` every ``EPOCH_LENGTH`` iterations: log-barrier ``t`` schedule, validation,
checkpoint) until the time or iteration budget is spent, the run is cancelled, or the loss is not
finite.  Learning modes (:mod:`WeakSegLib.training.modes`) plug into the same hooks without
touching the loop.

Callbacks observe a run without subclassing the trainer (MONAI's event handlers): any object with
some of the methods ``on_fit_start(trainer)`` (after preparation and resume, before the first
step), ``on_iteration_start(trainer)`` (before each ``train_step``, after the budget checks),
``on_iteration_end(trainer)`` (after each optimiser step and its bookkeeping) and
``on_fit_end(trainer)`` (after the model is saved; ``trainer.result`` holds the
:class:`TrainResult`).  A missing method is simply not called.

Budget: ``minutes`` counts the whole ``train()`` call (preparation included), so ``--minutes 3``
returns after about three minutes with a usable model.  ``iterations`` makes runs reproducible:
on the CPU with a fixed seed, a run resumed from its checkpoint gives the same weights as an
uninterrupted one (all randomness comes from one seeded generator saved in the checkpoint).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from WeakSegLib.config import TrainConfig
from WeakSegLib.data.dataset import Dataset
from WeakSegLib.jobs.protocol import MSG_PROGRESS
from WeakSegLib.model import (
    CHECKPOINT,
    HISTORY,
    Model,
    ModelFolderLock,
    check_model_folder,
    save_state_dict_atomic,
)
from WeakSegLib.networks.planning import build_network, plan_training
from WeakSegLib.networks.precision import autocast_forward, use_bf16
from WeakSegLib.training import distributed as dist_utils
from WeakSegLib.training.data import BatchSampler, prepare_dataset
from WeakSegLib.training.modes import get_mode
from WeakSegLib.training.objective import Objective
from WeakSegLib.training.size_prior import init_from_size_ranges
from WeakSegLib.transforms.preprocessing import Preprocessing
from WeakSegLib.utils import (
    atomic_write_json,
    configure_threads,
    describe_device,
    peak_rss_mb,
    probe_writable,
    resolve_device,
    set_seed,
)

logger = logging.getLogger(__name__)

EPOCH_LENGTH = 50
MAX_SANE_WEIGHT = 1e6      # trained weights stay within a few tens; beyond this a run has diverged


class TrainingError(RuntimeError):
    """Training stopped (e.g. non-finite loss); the message says why and what was kept."""


@dataclass
class TrainResult:
    model: Model
    status: str                      # "completed" | "cancelled"
    iterations: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    out_dir: Path | None = None


ProgressFn = Callable[[dict], None]
CALLBACK_EVENTS = ("on_fit_start", "on_iteration_start", "on_iteration_end", "on_fit_end")


class Trainer:
    """Trains a model on a :class:`~WeakSegLib.data.dataset.Dataset` of weakly annotated cases."""

    def __init__(self, dataset: Dataset, config: TrainConfig, out_dir: str | os.PathLike | None = None,
                 progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
                 validation: Dataset | None = None, resume: bool = False,
                 callbacks: Sequence[object] | None = None):
        self.dataset = dataset
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress_fn = progress
        self.should_stop = should_stop or (lambda: False)
        self.validation = validation
        self.resume = resume
        self.dist = dist_utils.DistributedContext.from_environment(config.device)
        self.device = self.dist.device if self.dist.enabled else resolve_device(config.device)
        self.history: list[dict] = []
        self.iteration = 0
        self.start_time = time.monotonic()
        self.elapsed_before = 0.0
        self.mode = get_mode(config.mode, config.mode_options)
        self.callbacks = list(callbacks or ())
        self.result: TrainResult | None = None
        self._staged_checkpoint: dict | None = None

    # ------------------------------------------------------------------ hooks
    def build_network(self) -> torch.nn.Module:
        set_seed(self.config.seed)
        network = build_network(self.plan)
        if self.init_model is not None:
            network.load_state_dict(self.init_model.network.state_dict())
            logger.info("Starting from the weights of %s", self.config.init_model)
        return network.to(self.device)

    def init_output_bias(self, network: torch.nn.Module) -> list[float] | None:
        """Start the output layer at the size ranges' class shares (:mod:`WeakSegLib.training.size_prior`);
        returns the shares, or None (no case has a size range)."""
        shares = init_from_size_ranges(network, self.prepared, self.plan, self.device)
        if shares is None:
            return None
        logger.info("Initial class shares from the size ranges: %s",
                    ", ".join(f"{n} {float(p):.4f}" for n, p in zip(self.dataset.class_names, shares)))
        return [float(p) for p in shares]

    def build_objective(self) -> Objective:
        ratio = self.dataset.priors.get("class_ratio")
        return Objective(self.config, self.dataset.num_classes, ratio, self.dataset.class_names)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=self.config.learning_rate,
                                weight_decay=self.config.weight_decay)
        return opt

    def learning_rate(self, fraction: float) -> float:
        """Warm-up then polynomial decay over the budget (time or iterations) — adapts to any budget."""
        lr0 = self.config.learning_rate
        warm = self.config.warmup_fraction
        if fraction < warm:
            return lr0 * (0.1 + 0.9 * fraction / warm)
        return lr0 * max(1.0 - (fraction - warm) / (1.0 - warm), 0.0) ** 0.9 + lr0 * 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, *spatial) float32 of the training network under the precision policy."""
        return autocast_forward(self.network, x, self.device, self.config.bf16)

    def train_step(self) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
        """One optimisation step: a patch batch (voxel terms) and/or a volume batch (global terms)."""
        terms: dict[str, torch.Tensor] = {}
        violations: dict[str, float] = {}
        # Volume batches (global terms) alternate with patch batches (voxel terms) when both exist;
        # volume batches carry the volume's voxel labels too, so no annotation is idle.
        has_local, has_global = bool(self.sampler.local_cases), bool(self.sampler.global_cases)
        use_volume = has_global and (not has_local or self.iteration % self.global_every == self.global_every - 1)
        patch = self.sampler.patch_batch() if has_local and not use_volume else None
        volume = self.sampler.volume_batch() if use_volume else None
        joint = None
        if patch is not None:
            patch.to(self.device)
            # A mode may join patches of unannotated volumes to this forward pass (one batched pass).
            joint = self.mode.joint_batch(self)
            if joint is None:
                logits = self.forward(patch.image)
            else:
                joint.to(self.device)
                both = self.forward(torch.cat([patch.image, joint.image]))
                logits, joint_logits = both[:patch.image.shape[0]], both[patch.image.shape[0]:]
            terms.update(self.objective.voxel_terms(logits, patch))
            if volume is None:
                terms.update(self.objective.class_ratio_term(logits))
            if joint is None:
                terms.update(self.mode.extra_terms(self, logits, patch))
            else:
                terms.update(self.mode.joint_terms(self, logits, patch, joint, joint_logits))
        if volume is not None:
            volume.to(self.device)
            logits = self.forward(volume.image)
            for name, value in self.objective.voxel_terms(logits, volume).items():
                terms[name] = terms[name] + value if name in terms else value
            gterms, violations = self.objective.global_terms(logits, volume)
            terms.update(gterms)
        if joint is None:                   # a joint batch already carried this step's unannotated patches
            terms.update(self.mode.unlabelled_terms(self))
        if not terms:
            raise TrainingError("No loss term applies to this data: give scribbles, masks, boxes, tags or sizes "
                                "for at least one case.")
        total = sum(terms.values())
        return total, {k: float(v.detach()) for k, v in terms.items()}, violations

    def validation_step(self) -> dict:
        """Mean foreground Dice on the held-out validation cases (never on the training data)."""
        if self.validation is None or not len(self.validation):
            return {}
        from WeakSegLib.evaluation.metrics import dice

        model = self.current_model()
        scores = []
        for case in self.validation.cases:
            if case.ground_truth is None:
                continue
            pred = model.predict(case.image).labels.array
            per = dice(pred, case.ground_truth.array, labels=list(range(1, self.dataset.num_classes)))
            vals = [v for v in per.values() if v is not None and not math.isnan(v)]
            scores.append(float(np.mean(vals)) if vals else float("nan"))
        self.network.train()
        return {"val_dice": float(np.nanmean(scores)) if scores else float("nan")}

    def on_epoch_end(self) -> None:
        self.objective.barrier.step()
        if self.config.validate_every and self.iteration % self.config.validate_every == 0:
            self.history.append({"iteration": self.iteration, **self.validation_step()})
        self.mode.on_epoch_end(self)

    # ------------------------------------------------------------------ bookkeeping
    def _call_back(self, event: str) -> None:
        """Call ``event`` (one of :data:`CALLBACK_EVENTS`) on every callback that defines it."""
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self)

    def _emit(self, fraction: float, message: str, **extra) -> None:
        if self.progress_fn is not None and self.dist.is_main:
            event = {"type": MSG_PROGRESS, "fraction": round(float(min(max(fraction, 0.0), 1.0)), 4),
                     "message": message, "iteration": self.iteration, **extra}
            self.progress_fn(event)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.start_time

    def fraction_done(self) -> float:
        fractions = []
        if self.config.iterations:
            fractions.append(self.iteration / self.config.iterations)
        if self.config.minutes:
            fractions.append(self.elapsed() / (self.config.minutes * 60.0))
        # Iterations make the schedule reproducible; time only decides when no iteration count is given.
        return fractions[0] if self.config.iterations else max(fractions)

    def current_model(self) -> Model:
        net = self.dist.unwrap(self.network)
        return Model(net, self.plan, self.preprocessing, self.dataset.classes, self.config, self.summary())

    @property
    def precision(self) -> str:
        """``"bf16 autocast"`` or ``"float32"``: how the network's forward passes run (the losses are float32)."""
        return "bf16 autocast" if use_bf16(self.device, self.config.bf16) else "float32"

    def summary(self) -> dict:
        return {"iterations": self.iteration, "seconds": round(self.elapsed(), 2),
                "device": describe_device(self.device), "precision": self.precision,
                "objective_terms": self.term_names,
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                if self.device.type == "cuda" else None,
                "world_size": self.dist.world_size, "mode": self.config.mode,
                "training_cases": [c.id for c in self.dataset.cases], **self.dist.summary()}

    def checkpoint_state(self) -> dict:
        return {
            "network": {k: v.detach().cpu() for k, v in self.dist.unwrap(self.network).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "barrier_t": float(self.objective.t),
            "elapsed": float(self.elapsed()),
            "mode": self.mode.state_dict(),
            # DDP: every rank's sampler/RNG/mode state (a collective), so a restart of all ranks resumes each one.
            **self.dist.rank_states({"sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state(),
                                     "mode": self.mode.state_dict()}),
        }

    def fingerprint(self) -> dict:
        """What a checkpoint belongs to: the dataset (case ids, classes, channels) and the plan."""
        return {"cases": sorted(c.id for c in self.dataset.cases), "classes": list(self.dataset.class_names),
                "channels": list(self.dataset.channels), "plan": self.plan.to_dict()}

    def weights_finite(self) -> bool:
        """The weights are finite and none has blown up (|w| < :data:`MAX_SANE_WEIGHT`): a model with such
        weights predicts one class everywhere, so it is never checkpointed or saved."""
        return all(bool(torch.isfinite(p).all()) and float(p.detach().abs().max()) < MAX_SANE_WEIGHT
                   for p in self.dist.unwrap(self.network).parameters() if p.numel())

    def stage_checkpoint(self) -> None:
        """Take a checkpoint of the current state, written by :meth:`commit_checkpoint` only once the next
        step's loss, computed with these weights, is finite: the last good checkpoint is never the state of
        a step that exploded (finite loss, then weights blown up)."""
        if self.out_dir is None:
            return
        state = self.checkpoint_state()       # on every rank: under DDP it gathers the ranks' states
        finite = self.dist.all_finite(torch.tensor(0.0 if self.weights_finite() else float("nan")))
        self._staged_checkpoint = copy.deepcopy({**state, "fingerprint": self.fingerprint()}) \
            if finite and self.dist.is_main else None

    def commit_checkpoint(self) -> None:
        state, self._staged_checkpoint = self._staged_checkpoint, None
        if state is not None and self.out_dir is not None and self.dist.is_main:
            save_state_dict_atomic(state, self.out_dir / CHECKPOINT)

    def save_checkpoint(self) -> None:
        """Write a checkpoint of the current state now (after checking the weights are finite)."""
        self.stage_checkpoint()
        self.commit_checkpoint()

    def open_out_dir(self) -> ModelFolderLock | None:
        """Before any work: lock the model folder, check that it can be written and is a model folder, and
        (for a new run) remove the checkpoint of an earlier run, so that nothing of it can mix with this
        one.  Returns the lock to release at the end (None without a folder or on DDP ranks other than 0)."""
        if self.out_dir is None or not self.dist.is_main:
            return None
        lock = ModelFolderLock(self.out_dir).acquire()
        try:
            check_model_folder(self.out_dir)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe_writable(self.out_dir, f"the model folder '{self.out_dir}'")
            checkpoint = self.out_dir / CHECKPOINT
            if not self.resume and checkpoint.exists():
                checkpoint.unlink()
                logger.info("Removed the checkpoint of an earlier run from %s (this run starts anew)", self.out_dir)
            elif self.resume and not checkpoint.exists():
                logger.warning("No checkpoint in %s to resume from: training starts from the beginning.",
                               self.out_dir)
        except BaseException:
            lock.release()
            raise
        return lock

    def _check_fingerprint(self, state: dict, path: Path) -> None:
        saved, current = state.get("fingerprint"), self.fingerprint()
        if saved is None or saved == current:
            return
        what = [name for name, key in (("dataset cases", "cases"), ("classes", "classes"),
                                        ("channels", "channels"), ("plan", "plan")) if saved.get(key) != current[key]]
        raise TrainingError(f"The checkpoint in '{path.parent}' belongs to another dataset/plan (its {', '.join(what)} "
                            f"differ from this run's). Resume with the dataset and options it was started with, or "
                            f"start a new run (--overwrite, or another --out).")

    def load_checkpoint(self) -> bool:
        path = None if self.out_dir is None else self.out_dir / CHECKPOINT
        # weights_only load; under DDP rank 0 reads it and every rank receives it, with its own sampler/RNG state.
        try:
            state = None if path is None else self.dist.load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - a damaged file or one that is not a checkpoint
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TrainingError(f"Cannot resume: '{path}' is damaged or not a WeakSeg checkpoint ({first[:160]}). "
                                f"Start a new run (--overwrite).") from None
        if state is None:
            return False
        self._check_fingerprint(state, path)
        try:
            self.dist.unwrap(self.network).load_state_dict(state["network"])
        except (RuntimeError, KeyError) as exc:
            raise TrainingError(f"The checkpoint in '{path.parent}' belongs to another dataset/plan (its network "
                                f"does not fit this run's: {type(exc).__name__}). Resume with the dataset and options "
                                f"it was started with, or start a new run (--overwrite, or another --out).") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.objective.t = float(state["barrier_t"])
        self.elapsed_before = float(state["elapsed"])
        self.mode.load_state_dict(state.get("mode", {}))
        logger.info("Resumed from %s at iteration %d", path, self.iteration)
        return True

    # ------------------------------------------------------------------ the loop
    def prepare(self) -> None:
        cfg = self.config
        configure_threads(cfg.num_threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.init_model = Model.load(cfg.init_model) if cfg.init_model else None
        if self.init_model is not None:
            # Fine-tuning: the data goes onto the loaded model's grid, with its normalisation.
            if self.init_model.class_names != self.dataset.class_names:
                raise TrainingError(f"init_model '{cfg.init_model}' has classes {self.init_model.class_names}, the "
                                    f"dataset {self.dataset.class_names}; they must match to fine-tune.")
            self.plan = self.init_model.plan
            self.preprocessing = self.init_model.preprocessing
        else:
            self.plan = plan_training(self.dataset, cfg, self.device.type)
            self.preprocessing = Preprocessing(self.dataset.modality, self.plan.dims, self.plan.target_spacing_zyx,
                                               channel_names=self.dataset.channels)
            if self.dataset.modality.upper() == "CT":
                self.preprocessing.fit_ct([c.image for c in self.dataset.cases])
        self._emit(0.0, "Preparing data")
        cases = self.dist.shard(self.dataset.cases)
        local = Dataset(self.dataset.classes, cases, self.dataset.channels, self.dataset.modality,
                        self.dataset.priors, self.dataset.name)
        self.prepared = prepare_dataset(local, self.preprocessing, cfg)
        if not self.prepared:
            raise TrainingError("No usable training case (the 'full' objective needs ground truth).")
        if self.device.type == "cuda":
            total = sum(c.image.numel() * 4 for c in self.prepared)
            if total < 0.25 * torch.cuda.get_device_properties(self.device).total_memory:
                for c in self.prepared:   # data kept on the device when it fits
                    c.image = c.image.to(self.device)
        self.network = self.build_network()
        if cfg.size_prior_init and self.init_model is None:
            self.init_output_bias(self.network)
        self.network = self.dist.wrap(self.network)   # DDP broadcasts rank 0's weights, bias included
        self.objective = self.build_objective()
        self.objective.spacing_zyx = tuple(self.plan.target_spacing_zyx)
        self.term_names = self.objective.describe(self.prepared)
        self.optimizer = self.configure_optimizers()
        # Under DDP each rank draws its share of the total batch (the model's plan keeps the total).
        self.sampler = BatchSampler(self.prepared, self.dist.local_plan(self.plan), cfg.augment,
                                    cfg.seed + 7919 * self.dist.rank)
        self.global_every = 2
        # Volume batches only for cases whose global terms are weighted (e.g. not for boxes whose terms are off).
        self.sampler.global_cases = [c for c in self.sampler.global_cases if self.objective.needs_volume_batch(c)]
        self.mode.setup(self)
        logger.info("Objective terms: %s; device %s, %s", ", ".join(self.term_names), describe_device(self.device),
                    self.precision)

    def fit(self) -> TrainResult:
        """Train (see the module docstring); the model folder is locked meanwhile and written as a whole."""
        self.start_time = time.monotonic()
        lock = self.open_out_dir()
        try:
            return self._fit()
        finally:
            if lock is not None:
                lock.release()

    @dist_utils.reports_lost_ranks(TrainingError)
    def _fit(self) -> TrainResult:
        self.prepare()
        if self.resume:
            self.load_checkpoint()
        cfg = self.config
        status = "completed"
        self.network.train()
        last_log = time.monotonic()
        running: dict[str, float] = {}
        count = 0
        self._call_back("on_fit_start")
        while True:
            if cfg.iterations is not None and self.iteration >= cfg.iterations:
                break
            if cfg.minutes is not None and self.dist.same(self.elapsed()) >= cfg.minutes * 60.0:
                break     # rank 0's clock decides for every rank (DDP)
            if self.dist.any(self.should_stop()):
                status = "cancelled"
                break
            fraction = self.dist.same(self.fraction_done())
            lr = self.learning_rate(fraction)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._call_back("on_iteration_start")
            total, terms, violations = self.train_step()
            if not self.dist.all_finite(total):
                raise TrainingError(
                    f"The loss became {float(total.detach())} at iteration {self.iteration + 1} (terms: "
                    f"{ {k: round(v, 4) for k, v in terms.items()} }). Training stopped; {self.keep_last_good()}. "
                    f"Try a lower learning rate (--config with learning_rate) or check the annotations' size ranges.")
            self.commit_checkpoint()        # the staged state gave a finite loss: it is a good checkpoint
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
            self.optimizer.step()
            self.mode.after_step(self)
            self.iteration += 1
            count += 1
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + v
            if self.iteration % EPOCH_LENGTH == 0:
                self.on_epoch_end()
            if cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                self.stage_checkpoint()
            if self.iteration % cfg.log_every == 0 or time.monotonic() - last_log > 5:
                means = {k: round(v / count, 5) for k, v in running.items()}
                entry = {"iteration": self.iteration, "seconds": round(self.elapsed(), 2), "lr": lr,
                         "loss": round(sum(means.values()), 5), "terms": means,
                         "violations": dict(self.objective.violations)}
                self.history.append(entry)
                frac = self.fraction_done()
                eta = self.elapsed() * (1 - frac) / frac if frac > 0 else None
                self._emit(frac, f"iteration {self.iteration}, loss {entry['loss']:.4f}",
                           eta_s=None if eta is None else round(eta, 1), losses=means, violations=entry["violations"],
                           lr=lr)
                running, count, last_log = {}, 0, time.monotonic()
            self._call_back("on_iteration_end")
        self.mode.finish(self)
        self.dist.verify_replicas(self.network)   # DDP: every rank holds the same weights (else an error)
        final = self.validation_step()
        if final:
            self.history.append({"iteration": self.iteration, **final})
        model = self.current_model()
        self._staged_checkpoint = None
        # Every rank takes part in the state under DDP; rank 0 writes the folder as a whole (model, checkpoint,
        # history), never non-finite weights.
        last_state = self.checkpoint_state() if self.out_dir is not None else None
        if self.out_dir is not None and not self.weights_finite():      # every rank: they hold the same weights
            raise TrainingError(f"The weights became non-finite or blew up (|w| >= {MAX_SANE_WEIGHT:g}) by "
                                f"iteration {self.iteration}; {self.keep_last_good()}. Try a lower learning rate.")
        if self.out_dir is not None and self.dist.is_main:
            last_state = {**last_state, "fingerprint": self.fingerprint()}
            model.save(self.out_dir, extra={CHECKPOINT: lambda path: torch.save(last_state, path),
                                            HISTORY: lambda path: atomic_write_json(path, self.history)})
        self._emit(1.0, f"Training {status} after {self.iteration} iterations ({self.elapsed():.0f} s)")
        self.network = self.dist.unwrap(self.network)   # DDP's reducer goes before its process group
        self.dist.finish()
        self.result = TrainResult(model, status, self.iteration, self.elapsed(), self.history, self.out_dir)
        self._call_back("on_fit_end")
        return self.result

    def keep_last_good(self) -> str:
        """After a failure: save the model of the last good checkpoint (if any) and say what was kept."""
        if self.out_dir is None:
            return "no model folder was given, so nothing was saved"
        iteration = self.save_model_from_checkpoint()
        if iteration is not None:
            return (f"the model of the last good checkpoint (iteration {iteration}) is saved in '{self.out_dir}', "
                    f"and training can continue from it with --resume")
        held = (self.out_dir / "model.json").exists()
        return (f"no checkpoint of this run had been written yet (one every {self.config.checkpoint_every} "
                f"iterations), so the last good checkpoint is none and nothing was saved"
                + (f" ('{self.out_dir}' still holds the model it held before this run)" if held else ""))

    def save_model_from_checkpoint(self) -> int | None:
        """After a failure: write the model of the last good checkpoint (with that checkpoint and the history)
        as the model folder; returns its iteration, or None when there is no checkpoint of this run."""
        path = None if self.out_dir is None else self.out_dir / CHECKPOINT
        if path is None or not path.exists() or not self.dist.is_main:
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") not in (None, self.fingerprint()):
            return None
        net = build_network(self.plan)
        net.load_state_dict(state["network"])
        summary = {**self.summary(), "iterations": int(state["iteration"])}
        Model(net, self.plan, self.preprocessing, self.dataset.classes, self.config, summary).save(
            self.out_dir, extra={CHECKPOINT: lambda target: shutil.copyfile(path, target),
                                 HISTORY: lambda target: atomic_write_json(target, self.history)})
        return int(state["iteration"])


def train(dataset: Dataset, config: TrainConfig | None = None, out_dir: str | os.PathLike | None = None,
          progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
          validation: Dataset | None = None, resume: bool = False,
          callbacks: Sequence[object] | None = None) -> TrainResult:
    """Train a model on ``dataset`` (see :class:`Trainer`). Returns the model and the run's history."""
    config = config or TrainConfig()
    return Trainer(dataset, config, out_dir, progress, should_stop, validation, resume, callbacks).fit()

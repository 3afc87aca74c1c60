"""The training worker that the Slicer module (or any GUI) runs as a separate process.

:func:`write_job` writes a job folder, :func:`run_worker` runs it (``python -m WeakSegLib worker JOB``)
and streams JSON lines on stdout.  The job folder layout, the messages and the exit codes are defined
in :mod:`WeakSegLib.jobs.protocol`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from WeakSegLib.data.dataset import Dataset, load_dataset
from WeakSegLib.data.volume import write_volume
from WeakSegLib.jobs.protocol import (
    CANCEL_FILE,
    DATA_DIR,
    DATASET_JSON,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INVALID_JOB,
    EXIT_OK,
    JOB_JSON,
    JOB_VERSION,
    MODEL_DIR,
    MSG_DONE,
    MSG_ERROR,
    MSG_LOG,
    MSG_START,
    PARENT_PID_ENV,
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    VOLUME_SUFFIX,
    prediction_path,
    probabilities_path,
    safe_file_stem,
)
from WeakSegLib.utils import atomic_write_json, choose_num_threads, read_json_object, usable_cores

logger = logging.getLogger(__name__)


class InvalidJobError(ValueError):
    """A job folder the worker cannot run (its message is one readable sentence)."""


GUI_CORES = 1          # cores the worker leaves to the application that started it (Slicer's GUI)
GUI_CORES_FROM = 4     # ... on machines with at least this many cores (on 2 cores one thread is too high a price)


def worker_threads() -> int:
    """CPU threads of a training job: the cores free when it starts (a busy Slicer, rendering or running
    another job, counts as busy), leaving :data:`GUI_CORES` to the GUI on machines of 4 cores or more."""
    reserve = GUI_CORES if usable_cores() >= GUI_CORES_FROM else 0
    return choose_num_threads(reserve=reserve)


def write_job(job_dir: str | os.PathLike, dataset: Dataset, config: dict,
              predict_case_ids: list[str] | None = None, probabilities: bool = False) -> Path:
    """Write a job folder for :func:`run_worker` (images, annotations and sidecars as NIfTI + JSON).
    ``probabilities``: also write each predicted case's class probabilities."""
    from WeakSegLib.config import TrainConfig

    check_config_types(config)
    TrainConfig.from_dict(config)  # fail early, in the GUI, on a bad option
    job_dir = Path(job_dir)
    data = job_dir / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    cases = []
    for case in dataset.cases:
        safe = safe_file_stem(case.id)
        entry = {"id": case.id, "image": f"{safe}{VOLUME_SUFFIX}", "group": case.group}
        write_volume(case.image, data / entry["image"])
        if case.annotation is not None:
            entry["annotation"] = f"{safe}_annotation{VOLUME_SUFFIX}"
            entry["sidecar"] = f"{safe}_annotation.json"
            case.annotation.save(data / entry["annotation"], data / entry["sidecar"])
        if case.ground_truth is not None:
            entry["ground_truth"] = f"{safe}_gt{VOLUME_SUFFIX}"
            write_volume(case.ground_truth, data / entry["ground_truth"])
        cases.append(entry)
    manifest = {**dataset.manifest(), "unannotated_value": -1, "cases": cases}
    atomic_write_json(data / DATASET_JSON, manifest)
    ids = [c.id for c in dataset.cases]
    for cid in predict_case_ids or []:
        if cid not in ids:
            raise ValueError(f"Case '{cid}' to predict is not in the job's dataset ({ids}).")
    job = {"version": JOB_VERSION, "dataset": f"{DATA_DIR}/{DATASET_JSON}", "config": config,
           "predict": list(predict_case_ids or []), "model": MODEL_DIR, "probabilities": bool(probabilities)}
    atomic_write_json(job_dir / JOB_JSON, job)
    return job_dir


def _type_name(value) -> str:
    return type(value).__name__


def check_config_types(config) -> None:
    """ValueError, one line naming the key, when a training option of a job is unknown or has the wrong JSON
    type (:func:`WeakSegLib.config.check_option_types`)."""
    from WeakSegLib.config import check_option_types

    if not isinstance(config, dict):
        raise ValueError(f"{JOB_JSON}: 'config' must be an object of training options, got {_type_name(config)}.")
    check_option_types(config, f"{JOB_JSON} (config)")


JOB_KEYS = {  # key -> (check, what it must be)
    "version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "dataset": (lambda v: isinstance(v, str) and bool(v), "the path of the dataset file (a string)"),
    "config": (lambda v: isinstance(v, dict), "an object of training options"),
    "predict": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of case ids"),
    "model": (lambda v: isinstance(v, str) and bool(v), "a folder name (a string)"),
    "probabilities": (lambda v: isinstance(v, bool), "true or false"),
}


def read_job(job_dir: Path) -> dict:
    """The ``job.json`` of a job folder, checked (every value's type); InvalidJobError with one readable
    sentence naming the key otherwise."""
    if not job_dir.is_dir():
        raise InvalidJobError(f"Job folder '{job_dir}' does not exist.")
    try:
        job = read_json_object(job_dir / JOB_JSON, JOB_JSON)
    except FileNotFoundError:
        raise InvalidJobError(f"'{job_dir}' is not a WeakSeg job folder: {JOB_JSON} is missing.") from None
    except ValueError as exc:
        raise InvalidJobError(str(exc)) from None
    if "dataset" not in job or "config" not in job:
        raise InvalidJobError(f"{JOB_JSON} must hold 'dataset' and 'config' entries (written by write_job).")
    for key, value in job.items():
        if key in JOB_KEYS and not JOB_KEYS[key][0](value):
            raise InvalidJobError(f"{JOB_JSON}: '{key}' must be {JOB_KEYS[key][1]}, got {value!r} "
                                  f"({_type_name(value)}).")
    if job.get("version", 0) > JOB_VERSION:
        raise InvalidJobError(f"{JOB_JSON} has version {job['version']}; this WeakSegLib reads up to {JOB_VERSION}.")
    try:
        check_config_types(job["config"])
    except ValueError as exc:
        raise InvalidJobError(str(exc)) from None
    return job


class CancelWatch:
    """Whether the worker must stop: the GUI wrote ``JOB/cancel``, a SIGTERM/SIGINT arrived, or the
    application that started it (``WEAKSEG_PARENT_PID``) has ended.

    A trainer callback: ``on_fit_start`` and ``on_iteration_end`` look at the job folder and the
    parent (at most every ``interval_s``); calling the object (the trainer's ``should_stop``) answers
    from what was last seen, so the check costs nothing inside the loop.
    """

    def __init__(self, job_dir: str | os.PathLike, parent_pid: int | None = None, interval_s: float = 0.2) -> None:
        self.cancel_path = Path(job_dir) / CANCEL_FILE
        self.interval_s = interval_s
        self.reason: str | None = None
        self._last_check = -float("inf")
        self._parent = None
        if parent_pid:
            import psutil

            try:
                self._parent = psutil.Process(int(parent_pid))
            except (psutil.Error, ValueError):
                self.reason = f"the application that started the worker (pid {parent_pid}) has ended"

    def signalled(self, signum=None, frame=None) -> None:
        self.reason = self.reason or "stopped by a signal"

    def check(self, force: bool = False) -> bool:
        """Look at the cancel file and the parent now (or when ``interval_s`` has passed)."""
        now = time.monotonic()
        if self.reason is None and (force or now - self._last_check >= self.interval_s):
            self._last_check = now
            if self.cancel_path.exists():
                self.reason = "cancel requested"
            elif self._parent is not None and not self._parent.is_running():
                self.reason = "the application that started the worker has ended"
        return self.reason is not None

    def __call__(self) -> bool:
        return self.reason is not None

    def on_fit_start(self, trainer) -> None:
        self.check(force=True)

    def on_iteration_end(self, trainer) -> None:
        self.check()


class _JsonLogHandler(logging.Handler):
    def __init__(self, emit_fn):
        super().__init__(logging.INFO)
        self.emit_fn = emit_fn

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_fn({"type": MSG_LOG, "level": record.levelname, "message": record.getMessage()})


def run_worker(job_dir: Path) -> int:
    """Run a job folder; returns the exit code (see the module docstring)."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # anything printed by libraries must not corrupt the JSON stream

    def emit(event: dict) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    watch = CancelWatch(job_dir, os.environ.get(PARENT_PID_ENV) or None)
    signal.signal(signal.SIGTERM, watch.signalled)
    signal.signal(signal.SIGINT, watch.signalled)
    root = logging.getLogger("WeakSegLib")
    handler = _JsonLogHandler(emit)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    t0 = time.monotonic()
    try:
        job_dir = Path(job_dir)
        try:
            job = read_job(job_dir)
            from WeakSegLib.config import TrainConfig

            config = TrainConfig.from_dict(job["config"])
            dataset = load_dataset(job_dir / job["dataset"])
            predict_ids = list(job.get("predict", []))
            for cid in predict_ids:
                dataset[cid]  # raises KeyError with a clear message
        except (InvalidJobError, ValueError, FileNotFoundError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            emit({"type": MSG_ERROR, "message": f"Invalid job: {message}"})
            return EXIT_INVALID_JOB
        from WeakSegLib.training import TrainingError, train

        if config.num_threads is None and not os.environ.get("OMP_NUM_THREADS"):
            config.num_threads = worker_threads()
        emit({"type": MSG_START, "pid": os.getpid(), "cases": len(dataset), "device": config.device})
        from WeakSegLib.training.trainer import CHECKPOINT

        model_dir = job_dir / job.get("model", MODEL_DIR)
        try:
            result = train(dataset, config, model_dir, progress=emit, should_stop=watch, callbacks=[watch],
                           resume=(model_dir / CHECKPOINT).exists())
        except TrainingError as exc:
            emit({"type": MSG_ERROR, "message": str(exc)})
            return EXIT_FAILED
        except MemoryError:
            emit({"type": MSG_ERROR, "message": "Out of memory: reduce the patch or batch size, or use fewer cases."})
            return EXIT_FAILED
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "out of memory" in first.lower():
                first = "Out of GPU memory: choose the CPU device or a smaller patch/batch size."
            emit({"type": MSG_ERROR, "message": f"Training failed: {first}"})
            logger.debug("%s", traceback.format_exc())
            return EXIT_FAILED
        if watch.reason:
            logger.info("Training stopped (%s); writing the model and predictions of the current state.",
                        watch.reason)
        predictions, probabilities = {}, {}
        want_probabilities = bool(job.get("probabilities", False))
        for cid in predict_ids:
            pred = result.model.predict(dataset[cid].image, return_probabilities=want_probabilities)
            path = write_volume(pred.labels, job_dir / prediction_path(cid))
            predictions[cid] = path.relative_to(job_dir).as_posix()
            if want_probabilities and pred.probabilities is not None:
                path = write_volume(pred.probabilities, job_dir / probabilities_path(cid))
                probabilities[cid] = path.relative_to(job_dir).as_posix()
        status = STATUS_CANCELLED if result.status == "cancelled" or watch() else STATUS_COMPLETED
        done = {"type": MSG_DONE, "status": status, "model": model_dir.relative_to(job_dir).as_posix(),
                "predictions": predictions, "seconds": round(time.monotonic() - t0, 2),
                "iterations": result.iterations}
        if want_probabilities:
            done["probabilities"] = probabilities
        emit(done)
        return EXIT_CANCELLED if status == STATUS_CANCELLED else EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the GUI needs one readable line, never a traceback dump
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        emit({"type": MSG_ERROR, "message": f"Unexpected error ({type(exc).__name__}): {first}"})
        sys.stderr.write(traceback.format_exc())
        return EXIT_FAILED
    finally:
        root.removeHandler(handler)
        sys.stdout = sys.__stdout__

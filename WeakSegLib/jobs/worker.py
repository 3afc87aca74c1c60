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
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    VOLUME_SUFFIX,
    prediction_path,
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
              predict_case_ids: list[str] | None = None) -> Path:
    """Write a job folder for :func:`run_worker` (images, annotations and sidecars as NIfTI + JSON)."""
    from WeakSegLib.config import TrainConfig

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
           "predict": list(predict_case_ids or []), "model": MODEL_DIR}
    atomic_write_json(job_dir / JOB_JSON, job)
    return job_dir


def read_job(job_dir: Path) -> dict:
    """The ``job.json`` of a job folder, checked; InvalidJobError with one readable sentence otherwise."""
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
    if job.get("version", 0) > JOB_VERSION:
        raise InvalidJobError(f"{JOB_JSON} has version {job['version']}; this WeakSegLib reads up to {JOB_VERSION}.")
    return job


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

    cancelled = {"flag": False}

    def on_signal(signum, frame):
        cancelled["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
            result = train(dataset, config, model_dir, progress=emit, should_stop=lambda: cancelled["flag"],
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
        predictions = {}
        for cid in predict_ids:
            pred = result.model.predict(dataset[cid].image)
            path = write_volume(pred.labels, job_dir / prediction_path(cid))
            predictions[cid] = str(path.relative_to(job_dir))
        status = STATUS_CANCELLED if result.status == "cancelled" or cancelled["flag"] else STATUS_COMPLETED
        emit({"type": MSG_DONE, "status": status, "model": str(model_dir.relative_to(job_dir)),
              "predictions": predictions, "seconds": round(time.monotonic() - t0, 2),
              "iterations": result.iterations})
        return EXIT_CANCELLED if status == STATUS_CANCELLED else EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the GUI needs one readable line, never a traceback dump
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        emit({"type": MSG_ERROR, "message": f"Unexpected error ({type(exc).__name__}): {first}"})
        sys.stderr.write(traceback.format_exc())
        return EXIT_FAILED
    finally:
        root.removeHandler(handler)
        sys.stdout = sys.__stdout__

"""The training worker that the Slicer module (or any GUI) runs as a separate process.

Protocol
========

The GUI writes a **job folder** with :func:`write_job`::

    JOB/job.json            {"version": 1, "dataset": "data/dataset.json", "config": {...TrainConfig...},
                             "predict": ["case id", ...], "model": "model"}
    JOB/data/dataset.json   a normal WeakSeg dataset (images, label maps with -1 = unannotated, sidecars)

and starts ``python -m WeakSegLib worker JOB`` (``PythonSlicer -m WeakSegLib worker JOB`` in Slicer).
The worker writes **one JSON object per line on stdout** and nothing else (library chatter goes to
stderr)::

    {"type": "start", "pid": 1234, "cases": 3, "device": "cpu", "terms": [...]}
    {"type": "progress", "fraction": 0.42, "message": "...", "eta_s": 55.0, "iteration": 120,
     "losses": {"partial_ce": 0.3, ...}, "violations": {"size": 0.0}, "lr": 0.002}
    {"type": "log", "level": "WARNING", "message": "..."}
    {"type": "error", "message": "one readable line"}
    {"type": "done", "status": "completed" | "cancelled", "model": "model",
     "predictions": {"case id": "predictions/<case id>.nii.gz"}, "seconds": 80.5}

Exit codes: 0 completed; 2 invalid job (an ``error`` line says what is wrong); 3 training failed
(non-finite loss, out of memory; the last good checkpoint is kept); 4 cancelled by SIGTERM/SIGINT
(the model of the current state is saved and predictions are written, so Cancel never loses
work).  Result files: ``JOB/model/`` (loadable with :meth:`WeakSegLib.model.Model.load`) and
``JOB/predictions/<case id>.nii.gz`` (label maps on the case image's grid).
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

from .dataset import Dataset, load_dataset
from .utils import atomic_write_json
from .volume import write_volume

logger = logging.getLogger(__name__)

JOB_VERSION = 1
EXIT_OK, EXIT_INVALID_JOB, EXIT_FAILED, EXIT_CANCELLED = 0, 2, 3, 4


class InvalidJobError(ValueError):
    pass


def write_job(job_dir: str | os.PathLike, dataset: Dataset, config: dict,
              predict_case_ids: list[str] | None = None) -> Path:
    """Write a job folder for :func:`run_worker` (images, annotations and sidecars as NIfTI + JSON)."""
    from .training.config import TrainConfig

    TrainConfig.from_dict(config)  # fail early, in the GUI, on a bad option
    job_dir = Path(job_dir)
    data = job_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    cases = []
    for case in dataset.cases:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case.id)
        entry = {"id": case.id, "image": f"{safe}.nii.gz", "group": case.group}
        write_volume(case.image, data / entry["image"])
        if case.annotation is not None:
            entry["annotation"] = f"{safe}_annotation.nii.gz"
            entry["sidecar"] = f"{safe}_annotation.json"
            case.annotation.save(data / entry["annotation"], data / entry["sidecar"])
        if case.ground_truth is not None:
            entry["ground_truth"] = f"{safe}_gt.nii.gz"
            write_volume(case.ground_truth, data / entry["ground_truth"])
        cases.append(entry)
    manifest = {**dataset.manifest(), "unannotated_value": -1, "cases": cases}
    atomic_write_json(data / "dataset.json", manifest)
    ids = [c.id for c in dataset.cases]
    for cid in predict_case_ids or []:
        if cid not in ids:
            raise ValueError(f"Case '{cid}' to predict is not in the job's dataset ({ids}).")
    job = {"version": JOB_VERSION, "dataset": "data/dataset.json", "config": config,
           "predict": list(predict_case_ids or []), "model": "model"}
    atomic_write_json(job_dir / "job.json", job)
    return job_dir


def read_job(job_dir: Path) -> dict:
    path = job_dir / "job.json"
    if not job_dir.is_dir():
        raise InvalidJobError(f"Job folder '{job_dir}' does not exist.")
    if not path.exists():
        raise InvalidJobError(f"'{job_dir}' is not a WeakSeg job folder: job.json is missing.")
    try:
        job = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidJobError(f"job.json is corrupted (invalid JSON at line {exc.lineno}).") from None
    if not isinstance(job, dict) or "dataset" not in job or "config" not in job:
        raise InvalidJobError("job.json must hold 'dataset' and 'config' entries (written by write_job).")
    if job.get("version", 0) > JOB_VERSION:
        raise InvalidJobError(f"job.json has version {job['version']}; this WeakSegLib reads up to {JOB_VERSION}.")
    return job


class _JsonLogHandler(logging.Handler):
    def __init__(self, emit_fn):
        super().__init__(logging.INFO)
        self.emit_fn = emit_fn

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_fn({"type": "log", "level": record.levelname, "message": record.getMessage()})


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
            from .training.config import TrainConfig

            config = TrainConfig.from_dict(job["config"])
            dataset = load_dataset(job_dir / job["dataset"])
            predict_ids = list(job.get("predict", []))
            for cid in predict_ids:
                dataset[cid]  # raises KeyError with a clear message
        except (InvalidJobError, ValueError, FileNotFoundError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            emit({"type": "error", "message": f"Invalid job: {message}"})
            return EXIT_INVALID_JOB
        from .training import TrainingError, train

        emit({"type": "start", "pid": os.getpid(), "cases": len(dataset), "device": config.device})
        model_dir = job_dir / job.get("model", "model")
        try:
            result = train(dataset, config, model_dir, progress=emit, should_stop=lambda: cancelled["flag"],
                           resume=(model_dir / "checkpoint.pt").exists())
        except TrainingError as exc:
            emit({"type": "error", "message": str(exc)})
            return EXIT_FAILED
        except MemoryError:
            emit({"type": "error", "message": "Out of memory: reduce the patch or batch size, or use fewer cases."})
            return EXIT_FAILED
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "out of memory" in first.lower():
                first = "Out of GPU memory: choose the CPU device or a smaller patch/batch size."
            emit({"type": "error", "message": f"Training failed: {first}"})
            logger.debug("%s", traceback.format_exc())
            return EXIT_FAILED
        predictions = {}
        pred_dir = job_dir / "predictions"
        for cid in predict_ids:
            case = dataset[cid]
            pred = result.model.predict(case.image)
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cid)
            path = write_volume(pred.labels, pred_dir / f"{safe}.nii.gz")
            predictions[cid] = str(path.relative_to(job_dir))
        status = "cancelled" if result.status == "cancelled" or cancelled["flag"] else "completed"
        emit({"type": "done", "status": status, "model": str(model_dir.relative_to(job_dir)),
              "predictions": predictions, "seconds": round(time.monotonic() - t0, 2),
              "iterations": result.iterations})
        return EXIT_CANCELLED if status == "cancelled" else EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the GUI needs one readable line, never a traceback dump
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        emit({"type": "error", "message": f"Unexpected error ({type(exc).__name__}): {first}"})
        sys.stderr.write(traceback.format_exc())
        return EXIT_FAILED
    finally:
        root.removeHandler(handler)
        sys.stdout = sys.__stdout__

"""The worker protocol, defined once: job folder layout, JSON-lines messages and exit codes.

Both sides use this module: the worker (:mod:`WeakSegLib.jobs.worker`) and the GUI that launches it
(the Slicer module's sessions).  It imports neither torch nor Slicer.

Job folder
==========

The GUI writes (:func:`WeakSegLib.jobs.worker.write_job`)::

    JOB/job.json            {"version": 1, "dataset": "data/dataset.json", "config": {...TrainConfig...},
                             "predict": ["case id", ...], "model": "model", "probabilities": false}
    JOB/data/dataset.json   a normal WeakSeg dataset (images, label maps with -1 = unannotated, sidecars)

Every value of ``job.json`` is type-checked when the worker reads it; a wrong one gives one line that
names the key (``job.json: 'predict' must be a list of case ids, got str.``).

and starts ``python -m WeakSegLib worker JOB`` (``PythonSlicer -m WeakSegLib worker JOB`` in Slicer).
Results: ``JOB/model/`` (a model folder with ``model.json``, loadable with
:meth:`WeakSegLib.model.Model.load`) and ``JOB/predictions/<case id>.nii.gz`` (label maps on the case
image's grid); with ``"probabilities": true`` also ``JOB/predictions/<case id>_probabilities.nii.gz``
(z, y, x, class).  The GUI sends the worker's stderr to ``JOB/worker.log``.

Cancel
======

The GUI writes the file ``JOB/cancel`` (:func:`request_cancel`); the worker checks it after every
training iteration, stops, saves the model of the current state and writes the predictions.  No
signal is involved, so Cancel works the same on Windows, macOS and Linux and through launchers
(``PythonSlicer`` starts the real Python as a child and does not forward signals).  The worker also
stops when the process named by the environment variable ``WEAKSEG_PARENT_PID`` (the application
that started it) has ended, so a worker never outlives Slicer.  SIGTERM and SIGINT still cancel it
when they reach it.  A GUI kills the process tree only when the worker has not finished within a
deadline after the request.

Messages
========

The worker writes **one JSON object per line on stdout** and nothing else (library chatter goes to
stderr)::

    {"type": "start", "pid": 1234, "cases": 3, "device": "cpu"}
    {"type": "progress", "fraction": 0.42, "message": "...", "eta_s": 55.0, "iteration": 120,
     "losses": {"partial_ce": 0.3, ...}, "violations": {"size": 0.0}, "lr": 0.002}
    {"type": "log", "level": "WARNING", "message": "..."}
    {"type": "error", "message": "one readable line"}
    {"type": "done", "status": "completed" | "cancelled", "model": "model",
     "predictions": {"case id": "predictions/<case id>.nii.gz"}, "probabilities": {...},
     "seconds": 80.5, "iterations": 300}

A run's result is judged by its ``done`` message and the files it names (:func:`done_result_files`),
not by the exit code, which a launcher may replace with its own.

Exit codes
==========

:data:`EXIT_OK` (0) completed; :data:`EXIT_INVALID_JOB` (2) invalid job (an ``error`` line says what
is wrong); :data:`EXIT_FAILED` (3) training failed (non-finite loss, out of memory; the last good
checkpoint is kept); :data:`EXIT_CANCELLED` (4) cancelled (cancel file, parent gone, SIGTERM/SIGINT; the
model of the current state is saved and predictions are written, so Cancel never loses work).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from WeakSegLib.data.dataset import ClassInfo

JOB_VERSION = 1

# ------------------------------------------------------------------------------------------ file names
JOB_JSON = "job.json"
DATA_DIR = "data"
DATASET_JSON = "dataset.json"           # inside DATA_DIR
MODEL_DIR = "model"
MODEL_JSON = "model.json"               # inside a model folder
IMAGES_DIR = "images"                   # images a prediction job segments
STROKES_DIR = "strokes"                 # the user's strokes on them (a prediction that completes strokes)
PREDICTIONS_DIR = "predictions"
VOLUME_SUFFIX = ".nii.gz"
WORKER_LOG = "worker.log"
CANCEL_FILE = "cancel"                  # written by the GUI to stop the worker
PROBABILITIES_SUFFIX = "_probabilities"
PARENT_PID_ENV = "WEAKSEG_PARENT_PID"   # the worker stops when this process has ended

# ------------------------------------------------------------------------------------------ exit codes
EXIT_OK, EXIT_INVALID_JOB, EXIT_FAILED, EXIT_CANCELLED = 0, 2, 3, 4

# ------------------------------------------------------------------------------------------ messages
MSG_START, MSG_PROGRESS, MSG_LOG, MSG_ERROR, MSG_DONE = "start", "progress", "log", "error", "done"
MESSAGE_TYPES = (MSG_START, MSG_PROGRESS, MSG_LOG, MSG_ERROR, MSG_DONE)
STATUS_COMPLETED, STATUS_CANCELLED = "completed", "cancelled"


def safe_file_stem(case_id: str) -> str:
    """A case id as a file name stem: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)


def prediction_path(case_id: str) -> str:
    """Where the worker writes a case's prediction, relative to the job folder."""
    return f"{PREDICTIONS_DIR}/{safe_file_stem(case_id)}{VOLUME_SUFFIX}"


def probabilities_path(case_id: str) -> str:
    """Where the worker writes a case's class probabilities (z, y, x, class), relative to the job folder."""
    return f"{PREDICTIONS_DIR}/{safe_file_stem(case_id)}{PROBABILITIES_SUFFIX}{VOLUME_SUFFIX}"


def request_cancel(job_dir: str | os.PathLike) -> Path:
    """Ask the worker running ``job_dir`` to stop (it saves its model first): writes ``JOB/cancel``."""
    path = Path(job_dir) / CANCEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("cancel\n")
    return path


def cancel_requested(job_dir: str | os.PathLike) -> bool:
    """True once :func:`request_cancel` was called for ``job_dir``."""
    return (Path(job_dir) / CANCEL_FILE).exists()


def done_result_files(job_dir: str | os.PathLike, done: Mapping | None) -> dict | None:
    """The results a ``done`` message names, checked on disk: ``{"status", "model", "predictions",
    "probabilities"}`` with absolute paths, or None when there is no usable result (no ``done``
    message, an unknown status, the model folder without ``model.json`` or a named file missing).
    This, not the exit code, says whether a run succeeded."""
    if not isinstance(done, Mapping) or done.get("type", MSG_DONE) != MSG_DONE:
        return None
    status = done.get("status")
    if status not in (STATUS_COMPLETED, STATUS_CANCELLED):
        return None
    job_dir = Path(job_dir)
    out: dict = {"status": status, "model": None, "predictions": {}, "probabilities": {}}
    if done.get("model") is not None:
        model = job_dir / str(done["model"])
        if not (model / MODEL_JSON).is_file():
            return None
        out["model"] = model
    for key in ("predictions", "probabilities"):
        named = done.get(key) or {}
        if not isinstance(named, Mapping):
            return None
        for case_id, relative in named.items():
            path = job_dir / str(relative)
            if not path.is_file():
                return None
            out[key][str(case_id)] = path
    return out


def model_classes(model_dir: str | os.PathLike) -> list[ClassInfo]:
    """The classes stored in a model folder (read from its ``model.json``; torch is not imported)."""
    path = Path(model_dir) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"'{model_dir}' is not a WeakSeg model folder (no {MODEL_JSON}). Choose the folder "
                                f"that 'Save model' wrote.")
    try:
        meta = json.loads(path.read_text())
        return [ClassInfo(int(c["id"]), str(c["name"]), tuple(c["color"])) for c in meta["classes"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"'{path}' is not a valid WeakSeg model description ({exc}).") from None


def parse_worker_line(line: str) -> dict:
    """One stdout line of the worker -> a message dict; anything not a JSON object with a ``type``
    becomes a ``log`` message."""
    text = line.strip()
    if text.startswith("{"):
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = None
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            return message
    return {"type": MSG_LOG, "level": "INFO", "message": text}


def format_eta(seconds: float | None) -> str:
    """A duration in seconds as text: ``75.2`` -> ``"1 min 15 s"``; None/negative -> ``""``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe_message(message: Mapping) -> str | None:
    """A log line for a worker message (None for progress messages, which drive the progress bar)."""
    kind = message.get("type")
    if kind == MSG_PROGRESS:
        return None
    if kind == MSG_START:
        return f"Worker started (pid {message.get('pid', '?')}): {message.get('cases', '?')} case(s) on " \
               f"{message.get('device', '?')}."
    if kind == MSG_DONE:
        seconds = message.get("seconds")
        took = f" in {format_eta(seconds)}" if isinstance(seconds, (int, float)) else ""
        return f"Worker {message.get('status', 'finished')}{took}; {len(message.get('predictions') or {})} " \
               f"segmentation(s) written."
    if kind == MSG_ERROR:
        return f"ERROR: {message.get('message', '')}"
    level = str(message.get("level", "INFO"))
    text = str(message.get("message", ""))
    return text if level == "INFO" else f"{level}: {text}"


def describe_worker_exit(returncode: int | None, last_error: str | None = None, log_path: str | None = None) -> str:
    """A readable sentence for the worker's exit status (negative: stopped by that signal)."""
    where = f" Details are in '{log_path}'." if log_path else ""
    if returncode == EXIT_OK:
        return "Training completed."
    if returncode == EXIT_CANCELLED:
        return "Training was cancelled; the model of the last good state was kept."
    if returncode == EXIT_INVALID_JOB:
        return f"The training job was refused: {last_error or 'invalid job'}.{where}"
    if returncode == EXIT_FAILED:
        return f"Training failed: {last_error or 'unknown error'}.{where}"
    if returncode is None:
        return "The worker is still running."
    detail = f" Last error: {last_error}." if last_error else ""
    if returncode < 0:
        return f"The worker was stopped by signal {-returncode}.{detail}{where}"
    return f"The worker stopped unexpectedly (exit code {returncode}).{detail}{where}"

"""One WeakSeg job at a time, as the module's Logic runs it: start, poll, finish, keep the model, tidy up.

The Logic of ``WeakSeg.py`` (shared by the module's GUI and the Segment Editor effect) owns one
:class:`JobRunner` and calls :meth:`JobRunner.poll` from a QTimer; no Qt is needed here.

* One job at a time: starting a second one raises :class:`JobAlreadyRunning`.
* A finished training's model is copied to a folder that survives (``models_dir``, the current
  model); the job folder, which holds copies of the patient images, is deleted once the results are
  loaded (``keep_job_folders`` keeps it for debugging; after a failure only the log is kept).
* When the scene is closed, a running job is cancelled and its results are not loaded.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from WeakSegLib.jobs.protocol import WORKER_LOG, describe_message

logger = logging.getLogger(__name__)

CURRENT_MODEL = "current"


class JobAlreadyRunning(RuntimeError):
    """A WeakSeg job is running; one at a time shares the GPU and the CPU fairly with Slicer."""


def new_job_dir(base: str | os.PathLike, kind: str) -> Path:
    """A fresh folder name ``<base>/<date-time>-<kind>[-n]`` (not created)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = base / f"{stamp}-{kind}", 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{kind}-{n}"
    return path


def keep_model(model_dir: str | os.PathLike, models_dir: str | os.PathLike, name: str = CURRENT_MODEL) -> Path:
    """Copy a job's model folder to ``models_dir/name`` (replacing the previous one) and return it."""
    target = Path(models_dir) / name
    staging = Path(models_dir) / f".{name}.new"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(model_dir, staging)
    if target.exists():
        old = Path(models_dir) / f".{name}.old"
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    return target


def tidy_job_dir(job_dir: str | os.PathLike, failed: bool) -> None:
    """Delete a finished job folder (it holds copies of the patient images).  After a failure, keep only
    the worker's log, which the error message points to."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        return
    if not failed:
        shutil.rmtree(job_dir, ignore_errors=True)
        return
    for entry in job_dir.iterdir():
        if entry.name == WORKER_LOG:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


class JobRunner:
    """Runs training and prediction sessions (``WeakSegSlicerLib.sessions``) one at a time.

    ``temporary_dir``: where job folders go; ``models_dir``: where the current model is kept;
    ``python_executable``: the worker's Python (``PythonSlicer``); ``log``: a callable taking one
    line (the module's log box).
    """

    def __init__(self, temporary_dir: str | os.PathLike, models_dir: str | os.PathLike,
                 python_executable: str | None = None, log: Callable[[str], None] | None = None) -> None:
        self.temporary_dir = Path(temporary_dir)
        self.models_dir = Path(models_dir)
        self.python_executable = python_executable
        self.log = log or (lambda text: logger.info("%s", text))
        self.keep_job_folders = False
        self.session = None
        self.on_update: Callable | None = None
        self.on_finished: Callable | None = None
        self.on_history: Callable | None = None

    # ------------------------------------------------------------------------------------------ state
    def is_running(self) -> bool:
        return self.session is not None and self.session.status == "running"

    def _check_idle(self) -> None:
        if self.is_running():
            raise JobAlreadyRunning("A WeakSeg job is already running (WeakSeg module or Weak annotation effect); "
                                    "wait for it or cancel it first.")

    def new_job_dir(self, kind: str) -> Path:
        return new_job_dir(self.temporary_dir, kind)

    # ------------------------------------------------------------------------------------------ start
    def start_training(self, cases: Sequence, config: dict, predict_volume_nodes: Sequence | None = None,
                       load_results: bool = True, probabilities: bool = False, targets: dict | None = None,
                       on_update: Callable | None = None, on_finished: Callable | None = None):
        """Start a :class:`~WeakSegSlicerLib.sessions.TrainingSession`; returns it at once."""
        from WeakSegSlicerLib.sessions import TrainingSession

        self._check_idle()
        session = TrainingSession(cases, config, predict_volume_nodes, job_dir=self.new_job_dir("train"),
                                  python_executable=self.python_executable, load_results=load_results,
                                  probabilities=probabilities)
        session.targets = dict(targets or {})
        return self._begin(session, on_update, on_finished)

    def start_segmentation(self, model_path: str | os.PathLike | None, volume_nodes: Sequence, device: str = "auto",
                           targets: dict | None = None, on_update: Callable | None = None,
                           on_finished: Callable | None = None, strokes=None, load_results: bool = True,
                           stroke_cache: str | os.PathLike | None = None, largest_component: bool = False,
                           inside: Sequence[str] = ()):
        """Start a :class:`~WeakSegSlicerLib.sessions.PredictionSession` (``strokes``: a segmentation node
        whose painted voxels the result completes, ``stroke_cache`` its warm-start file; ``model_path``
        None: the strokes completed without a model; ``inside``: "INNER:OUTER" classes, ``--inside``); returns
        it at once."""
        from WeakSegSlicerLib.sessions import PredictionSession

        self._check_idle()
        session = PredictionSession(model_path, volume_nodes, device=device, job_dir=self.new_job_dir("segment"),
                                    python_executable=self.python_executable, strokes=strokes,
                                    load_results=load_results, stroke_cache=stroke_cache,
                                    largest_component=largest_component, inside=inside)
        session.targets = dict(targets or {})
        return self._begin(session, on_update, on_finished)

    def _begin(self, session, on_update, on_finished):
        try:
            session.start()
        except Exception:
            tidy_job_dir(session.job_dir, failed=False)  # nothing ran: the half-written job holds patient images
            raise
        self.session, self.on_update, self.on_finished = session, on_update, on_finished
        self.log(f"WeakSeg {session.kind} started in {session.job_dir}")
        return session

    # ------------------------------------------------------------------------------------------ follow
    def poll(self, scene=None) -> bool:
        """Read new messages and, once the process has ended, finish the session (load the results,
        keep the model, tidy the job folder, call ``on_finished``).  Returns True while a job runs."""
        session = self.session
        if session is None or session.status != "running":
            return False
        messages = session.poll()
        for message in messages:
            text = describe_message(message)
            if text:
                self.log(text)
        if messages and getattr(session, "history", None) and self.on_history:
            self.on_history(session.history)
        if self.on_update:
            self.on_update(session, messages)
        if session.running:
            return True
        self._finish(session, scene)
        return False

    def _finish(self, session, scene) -> None:
        session.finish(scene)   # never raises: a load failure is status "failed" with load_error
        model_dir = getattr(session, "model_dir", None)
        if session.kind == "training" and session.status in ("completed", "cancelled") and model_dir:
            try:
                session.kept_model_dir = keep_model(model_dir, self.models_dir)
            except OSError as exc:
                session.kept_model_dir = None
                self.log(f"The model could not be kept in {self.models_dir}: {exc}")
        if session.status == "failed":
            self.log(session.error_message)
        if not self.keep_job_folders and (session.load_results or session.discarded or session.status == "failed"):
            # The effect (load_results=False) reads the prediction files itself, then calls tidy().
            tidy_job_dir(session.job_dir, failed=session.status == "failed")
        callback, self.on_finished, self.on_update = self.on_finished, None, None
        if callback:
            callback(session)

    def tidy(self, session) -> None:
        """Delete a session's job folder once its files have been read (unless ``keep_job_folders``)."""
        if not self.keep_job_folders:
            tidy_job_dir(session.job_dir, failed=session.status == "failed")

    def wait(self, timeout_s: float | None = None, scene=None, sleep: Callable[[float], None] = time.sleep,
             process_events: Callable[[], None] | None = None):
        """Block until the job is done (scripts, tests); cancel it after ``timeout_s``.  Returns the session."""
        start = time.monotonic()
        while self.poll(scene):
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                self.cancel(grace_s=30.0)
                timeout_s = None
            if process_events:
                process_events()
            sleep(0.1)
        return self.session

    # ------------------------------------------------------------------------------------------ stop
    def cancel(self, grace_s: float = 60.0, discard: bool = False) -> None:
        """Ask the running job to stop (a training saves its model first); killed after ``grace_s``.
        ``discard``: do not load its results."""
        if self.is_running():
            if discard:
                self.session.discarded = True
            self.session.cancel(grace_s)
            self.log("Cancel requested.")

    def scene_closing(self) -> None:
        """The scene is about to be closed: the job's nodes go away, so cancel it and load nothing."""
        self.cancel(grace_s=30.0, discard=True)

    def shutdown(self) -> None:
        """Kill a running worker now (application exit)."""
        worker = getattr(self.session, "worker", None)
        if worker is not None:
            worker.kill()


def _alive(node) -> bool:
    scene = node.GetScene() if node is not None else None
    return scene is not None and scene.IsNodePresent(node)


def run_target_current(segmentation_node, volume_node, current_segmentation, current_volume) -> str:
    """Where a finished run of the Segment Editor effect may show its result: ``"current"`` when the
    segmentation and volume it started from are still in the scene and still the editor's current
    ones, ``"other"`` when the user has switched to others meanwhile, ``"gone"`` when they were removed
    (scene closed).  The result is shown only for ``"current"``."""
    if not _alive(segmentation_node) or not _alive(volume_node):
        return "gone"
    if current_segmentation is segmentation_node and current_volume is volume_node:
        return "current"
    return "other"

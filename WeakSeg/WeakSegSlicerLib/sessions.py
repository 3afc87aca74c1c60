"""Training and prediction in a background process, as the Slicer module's Logic drives them: collect
the annotations from the nodes, write the job, launch the worker, follow its progress (``poll`` from a
QTimer, never blocking) and load the results back as segmentation nodes.  No Qt needed.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN, AnnotationError
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Volume, write_volume
from WeakSegLib.jobs.protocol import (
    CANCEL_FILE,
    IMAGES_DIR,
    MSG_ERROR,
    MSG_LOG,
    MSG_PROGRESS,
    PREDICTIONS_DIR,
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    STROKES_DIR,
    VOLUME_SUFFIX,
    WORKER_LOG,
    describe_worker_exit,
    done_result_files,
    model_classes,
)
from WeakSegLib.jobs.worker import write_job
from WeakSegLib.mrml import (
    CaseNodes,
    annotation_from_nodes,
    case_id_for,
    classes_from_segmentation,
    dataset_from_nodes,
    load_predictions,
    load_probabilities,
    segment_terminologies,
    volume_from_node,
)
from WeakSegLib.mrml.nodes import _check_volume_node
from WeakSegSlicerLib.process import WorkerProcess, library_root, predict_command, worker_command, worker_environment


class _Session:
    """Shared bookkeeping of a background process run for the GUI (progress, status, errors)."""

    #: What runs, for messages ("training", "prediction").
    kind = "job"
    #: True when the worker reports no fraction done (the GUI shows a busy bar instead).
    indeterminate = False

    def __init__(self, job_dir: str | os.PathLike | None, python_executable: str | None) -> None:
        self.job_dir = Path(job_dir) if job_dir is not None else Path(tempfile.mkdtemp(prefix="WeakSeg-"))
        self.python_executable = python_executable
        self.worker: WorkerProcess | None = None
        self.status = "idle"  # idle | running | completed | cancelled | failed
        self.fraction = 0.0
        self.eta_s: float | None = None
        self.message = ""
        self.history: list[dict] = []
        self.log: list[str] = []
        self.result_nodes: dict[str, object] = {}
        self.probability_nodes: dict[str, list] = {}
        self.load_error: str | None = None
        #: Where results go: case id -> an existing segmentation node to update (else the volume's earlier
        #: WeakSeg result, else a new node).
        self.targets: dict[str, object] = {}
        self.load_results = True
        #: True: the results are not wanted any more (cancelled with discard, the scene was closed).
        self.discarded = False

    @property
    def log_path(self) -> Path:
        return self.job_dir / WORKER_LOG

    @property
    def running(self) -> bool:
        return self.worker is not None and not self.worker.finished

    def _launch(self, command: list[str], device: str | None, cancel_path: Path | None = None) -> None:
        env = worker_environment(device=device)
        self.worker = WorkerProcess(command, cwd=library_root(), env=env, stderr_path=self.log_path,
                                    cancel_path=cancel_path).start()
        self.status = "running"

    def poll(self) -> list[dict]:
        """New messages (never blocks); updates ``fraction``, ``eta_s``, ``message``, ``history``."""
        if self.worker is None:
            return []
        messages = self.worker.poll()
        for m in messages:
            kind = m.get("type")
            if kind == MSG_PROGRESS:
                self.fraction = float(m.get("fraction", self.fraction) or 0.0)
                self.eta_s = m.get("eta_s")
                self.message = str(m.get("message", "") or "")
                self.history.append(m)
            elif kind in (MSG_LOG, MSG_ERROR):
                self.log.append(f"{m.get('level', 'ERROR')}: {m.get('message', '')}")
        return messages

    def cancel(self, grace_s: float = 60.0) -> None:
        if self.worker is not None:
            self.worker.cancel(grace_s)

    def wait(self, timeout: float | None = None, scene=None) -> str:
        """Block until done (scripts, tests), load the results; returns the final status."""
        if self.worker is None:
            raise RuntimeError("Not started.")
        self.worker.wait(timeout)
        self.poll()
        self.finish(scene)
        return self.status

    @property
    def error_message(self) -> str:
        """A readable sentence about a failure ('' when none)."""
        if self.status != "failed" or self.worker is None:
            return ""
        if self.load_error:
            return f"The {self.kind} finished but its results could not be loaded: {self.load_error}"
        return self._describe_failure()

    def _describe_failure(self) -> str:
        return describe_worker_exit(self.worker.returncode, self.worker.last_error, str(self.log_path))

    def finish(self, scene=None) -> dict[str, object]:
        """After the process ended: set the status and load the results (once); returns ``result_nodes``.
        Results that cannot be loaded make the status "failed" with ``load_error`` (never an exception)."""
        if self.worker is None or self.running:
            raise RuntimeError(f"The {self.kind} is not finished.")
        if self.status == "running":
            try:
                self._finish(self.worker.returncode, scene)
            except Exception as exc:  # noqa: BLE001 - reported to the user in one line
                self.status = "failed"
                self.load_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return self.result_nodes

    def _finish(self, code: int, scene) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class TrainingSession(_Session):
    """Train on Slicer nodes in a worker process and load the predictions back.

    ``cases``: :class:`CaseNodes` or ``(volume_node, segmentation_node)`` pairs.  ``config``: the
    worker's options (``minutes``, ``iterations``, ``device``, ``seed``, ``init_model``), sent as given:
    the budget follows TrainConfig's one rule (``iterations`` alone means no time limit).
    ``predict_volume_nodes``: volumes to segment at the end (default: every case volume; other
    volumes are added as unlabelled cases).  ``load_results=False`` keeps the predictions as files
    (``prediction_files``) instead of creating segmentation nodes (the Segment Editor effect shows
    them as a preview).  ``probabilities``: also load each class's probability map as a volume node
    (``probability_nodes``).  The result is judged by the worker's ``done`` message and the files it
    names, not by the exit code (a launcher such as ``PythonSlicer`` may report its own).  Usage
    without a GUI::

        session = TrainingSession([(volume, segmentation)], {"minutes": 2}).start()
        session.wait()                      # or: call session.poll() from a QTimer, then finish()
        session.result_nodes                # case id -> new "<volume> WeakSeg" segmentation
    """

    kind = "training"

    def __init__(self, cases: Sequence[CaseNodes | tuple], config: Mapping,
                 predict_volume_nodes: Sequence | None = None, job_dir: str | os.PathLike | None = None,
                 python_executable: str | None = None,
                 classes: Sequence[ClassInfo] | None = None, load_results: bool = True,
                 probabilities: bool = False) -> None:
        super().__init__(job_dir, python_executable)
        self.cases = [c if isinstance(c, CaseNodes) else CaseNodes(*c) for c in cases]
        self.load_results = load_results
        self.probabilities = bool(probabilities)
        self.probability_files: dict[str, Path] = {}
        self.prediction_files: dict[str, Path] = {}
        self.config = dict(config)
        self.predict_volume_nodes = predict_volume_nodes
        self.classes = list(classes) if classes is not None else None
        self.volume_nodes: dict[str, object] = {}
        self.model_dir: Path | None = None

    def start(self) -> TrainingSession:
        """Collect the annotations, write the job folder and launch the worker."""
        items = list(self.cases)
        known = {id(c.volume_node) for c in items}
        for node in self.predict_volume_nodes or []:
            if id(node) not in known:
                items.append(CaseNodes(node, None, (), ()))
                known.add(id(node))
        dataset, self.volume_nodes = dataset_from_nodes(items, self.classes)
        self.classes = dataset.classes
        if not any(case.annotation is not None for case in dataset.cases):
            raise AnnotationError("None of the volumes has an annotation: paint scribbles (or add boxes, points, "
                                  "tags or size ranges) in their segmentations first.")
        wanted = None if self.predict_volume_nodes is None else {id(n) for n in self.predict_volume_nodes}
        predict_ids = [cid for cid, node in self.volume_nodes.items() if wanted is None or id(node) in wanted]
        self.terminologies = segment_terminologies(c.segmentation_node for c in self.cases)
        write_job(self.job_dir, dataset, self.config, predict_ids, probabilities=self.probabilities)
        self._launch(worker_command(self.job_dir, self.python_executable), self.config.get("device"),
                     cancel_path=self.job_dir / CANCEL_FILE)
        return self

    def _finish(self, code: int, scene) -> None:
        """Set the status from the ``done`` message and its files, remember the model, load the predictions."""
        results = done_result_files(self.job_dir, self.worker.done_message)
        if results is None:
            self.status = STATUS_CANCELLED if self.worker.cancel_requested and not self.worker.last_error else "failed"
            return
        self.status = results["status"]
        self.model_dir = results["model"]
        self.prediction_files = dict(results["predictions"])
        self.probability_files = dict(results["probabilities"])
        self.fraction = 1.0 if self.status == STATUS_COMPLETED else self.fraction
        if self.load_results and not self.discarded:
            predictions = {cid: str(path.relative_to(self.job_dir)) for cid, path in self.prediction_files.items()}
            self.result_nodes = load_predictions(self.job_dir, self.volume_nodes, self.classes or [], predictions,
                                                 scene, targets=self.targets, terminologies=self.terminologies)
            self.probability_nodes = load_probabilities(self.probability_files, self.volume_nodes,
                                                        self.classes or [])


def stroke_cache_name(volume_node_id: str) -> str:
    """The file name of a volume's stroke cache (``PredictionSession(stroke_cache=...)``) from its node ID."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(volume_node_id)) + ".npz"


class PredictionSession(_Session):
    """Segment volumes with a saved model in a background process (``weakseg predict``).

    ``model_dir=None`` with ``strokes``: the strokes completed without a model (a classifier fit on the
    painted voxels and geodesic competition, :func:`WeakSegLib.inference.geodesic.segment_from_strokes`;
    what the Segment Editor effect does without a model): the classes are the segmentation's segments,
    and the background must be painted (a segment named ``Background``).

    ``strokes``: a segmentation node painted on the (single) volume: its painted voxels are the user's
    strokes, which the result keeps and follows where the network disagrees with them
    (``weakseg predict --strokes``, :func:`WeakSegLib.inference.strokes.complete_strokes`; what the
    Segment Editor effect does with a trained model).  ``stroke_cache``: a .npz file that keeps the
    network's probabilities and the result between calls on the same volume and model (``--cache``: an
    Update after a correction skips the network and walks only the slices whose strokes changed);
    ``largest_component``: keep each class's largest component; ``inside``: ``"INNER:OUTER"`` segment names of
    a class that lies inside another (``--inside``: of the inner class's pieces, the one the outer class
    encloses is kept, not the largest; implies ``largest_component``; needs a model).  ``load_results=False``
    keeps the result as a file (``prediction_files``) instead of creating segmentation nodes.
    """

    kind = "prediction"
    indeterminate = True

    def __init__(self, model_dir: str | os.PathLike | None, volume_nodes: Sequence, device: str | None = None,
                 job_dir: str | os.PathLike | None = None, python_executable: str | None = None,
                 strokes=None, load_results: bool = True, stroke_cache: str | os.PathLike | None = None,
                 largest_component: bool = False, inside: Sequence[str] = ()) -> None:
        super().__init__(job_dir, python_executable)
        if stroke_cache is not None and strokes is None:
            raise ValueError("A stroke cache keeps what completing strokes computed: give the strokes too.")
        if model_dir is None and strokes is None:
            raise ValueError("There is no model yet: train one or load a saved model first (or paint strokes, "
                             "which are completed without a model).")
        if model_dir is None and stroke_cache is not None:
            raise ValueError("A stroke cache keeps a network's probabilities: there is none without a model.")
        self.stroke_cache = None if stroke_cache is None else Path(stroke_cache)
        self.largest_component = bool(largest_component)
        self.inside = [str(spec) for spec in inside]
        if self.inside and model_dir is None:
            raise ValueError("'Inside' names the classes of a model: train or load one first, or leave it empty.")
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.classes = model_classes(self.model_dir) if model_dir is not None else classes_from_segmentation(strokes)
        self.strokes = strokes
        self.load_results = load_results
        self.prediction_files: dict[str, Path] = {}
        self.volume_nodes: dict[str, object] = {}
        used: set[str] = set()
        for node in volume_nodes:
            _check_volume_node(node)
            self.volume_nodes[case_id_for(node.GetName(), used)] = node
        if not self.volume_nodes:
            raise ValueError("Select a volume to segment.")
        self.device = device
        self.message = "Segmenting " + ", ".join(node.GetName() for node in self.volume_nodes.values()) + "..."

    def start(self) -> PredictionSession:
        """Write the volumes as images in the job folder and launch ``weakseg predict`` on them."""
        images = []
        for case_id, node in self.volume_nodes.items():
            volume = volume_from_node(node)
            images.append(write_volume(volume, self.job_dir / IMAGES_DIR / f"{case_id}{VOLUME_SUFFIX}"))
        out = self.job_dir / PREDICTIONS_DIR
        out.mkdir(parents=True, exist_ok=True)
        target = out / images[0].name if len(images) == 1 else out
        command = predict_command(self.model_dir, images[0], target, self.python_executable, self.device)
        if len(images) > 1:
            i = command.index("--image")
            command[i + 1:i + 2] = [str(p) for p in images]
        if self.strokes is not None:
            command += ["--strokes", str(self._write_strokes()), "--unannotated", str(UNKNOWN)]
            if self.stroke_cache is not None:
                command += ["--cache", str(self.stroke_cache)]
        if self.largest_component:
            command += ["--largest-component"]
        for spec in self.inside:
            command += ["--inside", spec]
        self._launch(command, self.device)
        return self

    def _write_strokes(self) -> Path:
        """The painted voxels of ``strokes`` on the one volume's grid, as a label map (``UNKNOWN`` unpainted)."""
        if len(self.volume_nodes) != 1:
            raise ValueError("Strokes belong to one volume: segment one volume at a time with them.")
        case_id, node = next(iter(self.volume_nodes.items()))
        annotation = annotation_from_nodes(self.strokes, node, self.classes)
        if not np.any(annotation.labels != UNKNOWN):
            raise AnnotationError(f"Nothing is painted in '{self.strokes.GetName()}' on '{node.GetName()}': paint a "
                                  f"few strokes in each structure and in the background first.")
        path = self.job_dir / STROKES_DIR / f"{case_id}{VOLUME_SUFFIX}"
        return write_volume(Volume(annotation.labels.astype(np.int16), annotation.geometry), path)

    def _describe_failure(self) -> str:
        return (f"Segmentation failed: {self.worker.last_error or 'exit code ' + str(self.worker.returncode)}. "
                f"Details are in '{self.log_path}'.")

    def _expected_files(self) -> dict[str, Path]:
        out = self.job_dir / PREDICTIONS_DIR
        return {case_id: out / f"{case_id}{VOLUME_SUFFIX}" for case_id in self.volume_nodes}

    def _finish(self, code: int, scene) -> None:
        """Set the status and load the segmentations (or find the last error line of the log).  Success is
        every expected file written (``weakseg predict`` writes each atomically), whatever a launcher's
        exit code says, unless the run was cancelled."""
        expected = self._expected_files()
        written = all(path.is_file() for path in expected.values())
        if written and not self.worker.cancel_requested:
            self.status = STATUS_COMPLETED
            self.fraction = 1.0
            self.prediction_files = dict(expected)
            if self.load_results and not self.discarded:
                self.result_nodes = load_predictions(self.job_dir, self.volume_nodes, self.classes, None, scene,
                                                     targets=self.targets)
        else:
            self.status = STATUS_CANCELLED if self.worker.cancel_requested else "failed"
            if self.worker.last_error is None and self.log_path.exists():
                lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
                self.worker.last_error = lines[-1] if lines else None


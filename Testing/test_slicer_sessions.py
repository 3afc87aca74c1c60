"""WeakSegSlicerLib.sessions and the Logic of WeakSeg.py: nodes -> job -> the real worker process ->
segmentations back in the scene."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from mrml_scene import (
    SHAPE,
    add_segment,
    drawn_scene,
    new_segmentation,
    scene_removing_added_nodes,
    slicer,
    sphere_with_scribbles,
)
from WeakSegSlicerLib import models, process, sessions

from WeakSegLib import mrml
from WeakSegLib.data.annotation import AnnotationError
from WeakSegLib.data.volume import Geometry, Volume
from WeakSegLib.jobs import protocol

pytestmark = [pytest.mark.integration]


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


# ----------------------------------------------------------------------------------------------- end to end
def _sphere_phantom(noise: float):
    """A noisy sphere (radius 7 voxels) on a 24 x 32 x 32 grid of 1 x 1 x 1.5 mm voxels: ``(shape, truth,
    geometry, image)``, and the "Organ" stroke on its middle slice."""
    shape = (24, 32, 32)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = ((zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 15) ** 2) <= 7**2
    image = np.where(truth, 1.0, 0.0) + np.random.default_rng(0).normal(0, noise, shape)
    organ = np.zeros(shape, bool)
    organ[12, 14:19, 12:19] = True
    return shape, truth, Geometry(shape, (1.0, 1.0, 1.5), (0.0, 0.0, 0.0)), image.astype(np.float32), organ


@pytest.mark.slow
def test_end_to_end_with_the_real_worker(scene, tmp_path):
    """Nodes -> job -> `python -m WeakSegLib worker` -> predictions back as segmentations (Dice > 0.7)."""
    shape, truth, geometry, image, organ = _sphere_phantom(0.2)
    volume = mrml.volume_to_node(Volume(image, geometry), "phantom")
    seg = new_segmentation(scene, volume, "scribbles")
    background = np.zeros(shape, bool)
    background[12, 2:5, 2:30] = True
    background[3, 10:20, 10:20] = True
    add_segment(seg, "Background", background, volume)
    add_segment(seg, "Organ", organ, volume)
    session = sessions.TrainingSession([(volume, seg)], {"iterations": 150, "device": "cpu", "seed": 0},
                                   job_dir=tmp_path / "job")
    session.start()
    assert session.status == "running" and (tmp_path / "job" / "job.json").is_file()
    seen = []
    while session.running:  # what the module's QTimer does
        seen += session.poll()
        time.sleep(0.2)
    seen += session.poll()
    session.finish()
    assert session.status == "completed", session.error_message
    assert any(m["type"] == "progress" for m in seen) and session.history and session.fraction == 1.0
    assert session.model_dir is not None and protocol.model_classes(session.model_dir)[1].name == "Organ"
    result = session.result_nodes["phantom"]
    assert result.GetName() == "phantom WeakSeg"
    classes = session.classes
    predicted = mrml.labels_from_segmentation_node(result, volume, classes).array == 1
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert dice > 0.7, f"Dice {dice:.3f}"

    # The saved model segments a volume in a background process too.
    saved = models.copy_model_folder(session.model_dir, tmp_path / "saved model")
    other = mrml.volume_to_node(Volume(image, geometry), "new scan")
    prediction = sessions.PredictionSession(saved, [other], device="cpu", job_dir=tmp_path / "predict").start()
    assert prediction.wait(timeout=600) == "completed", prediction.error_message
    again = mrml.labels_from_segmentation_node(prediction.result_nodes["new_scan"], other, classes).array == 1
    assert 2 * (again & truth).sum() / (again.sum() + truth.sum()) > 0.7
    assert prediction.result_nodes["new_scan"].GetName() == "new scan WeakSeg"

    # With the strokes of a segmentation (the Segment Editor effect with a model): the result is a file that
    # keeps every painted voxel; strokes belong to one volume.
    # Through the job runner, as the effect runs it: the file is still there when on_finished reads it.
    from WeakSegSlicerLib.runner import JobRunner

    from WeakSegLib.data.volume import read_volume

    read = {}
    jobs = JobRunner(tmp_path / "jobs", tmp_path / "models")
    cache = tmp_path / "stroke cache" / sessions.stroke_cache_name(volume.GetID())
    for _ in range(2):              # Initialize, then an Update that starts from the first one's cache file
        completed = jobs.start_segmentation(saved, [volume], device="cpu", strokes=seg, load_results=False,
                                            on_finished=lambda s: read.update(labels=read_volume(
                                                s.prediction_files["phantom"]).array),
                                            stroke_cache=cache, largest_component=True)
        assert completed.worker.command[-3:] == ["--cache", str(cache), "--largest-component"]
        jobs.wait(600)
        assert completed.status == "completed", completed.error_message
        assert completed.result_nodes == {} and list(completed.prediction_files) == ["phantom"]
        labels = read.pop("labels")
        assert "cached network probabilities" in completed.log_path.read_text() or _ == 0
        jobs.tidy(completed)
        assert not completed.job_dir.exists() and cache.is_file()
        assert np.all(labels[organ] == 1) and np.all(labels[background] == 0)
        assert 2 * ((labels == 1) & truth).sum() / ((labels == 1).sum() + truth.sum()) > 0.7
    with pytest.raises(ValueError, match="one volume"):
        sessions.PredictionSession(saved, [volume, other], device="cpu", job_dir=tmp_path / "two", strokes=seg).start()
    # A class inside another (the effect's "Inside:"): passed to the worker, which names the classes when wrong.
    wrong = jobs.start_segmentation(saved, [volume], device="cpu", strokes=seg, load_results=False,
                                    largest_component=True, inside=["Organ:Heart"])
    assert wrong.worker.command[-2:] == ["--inside", "Organ:Heart"]
    jobs.wait(300)
    assert wrong.status == "failed" and "'Heart' is not a foreground class" in wrong.error_message, \
        wrong.error_message
    jobs.tidy(wrong)


def test_strokes_are_completed_without_a_model_through_the_job_runner(scene, tmp_path):
    """What the Segment Editor effect does without a model: a PredictionSession with no model folder, whose
    classes are the segmentation's segments; the result is a file that keeps every painted voxel."""
    from WeakSegSlicerLib.runner import JobRunner

    from WeakSegLib.data.volume import read_volume

    shape, truth, geometry, image, organ = _sphere_phantom(0.1)
    volume = mrml.volume_to_node(Volume(image, geometry), "phantom")
    seg = new_segmentation(scene, volume, "strokes")
    background = np.zeros(shape, bool)
    background[12, 2:5, 2:30] = True
    background[12, 28:31, 2:30] = True
    background[[2, 22], 10:20, 10:20] = True
    with pytest.raises(ValueError, match="no model yet"):
        sessions.PredictionSession(None, [volume])
    add_segment(seg, "Organ", organ, volume)
    jobs = JobRunner(tmp_path / "jobs", tmp_path / "models")
    # Only the organ painted: the job fails with the reason and what to do.
    failed = jobs.start_segmentation(None, [volume], device="cpu", strokes=seg, load_results=False)
    jobs.wait(300)
    assert failed.status == "failed" and "Background" in failed.error_message, failed.error_message
    jobs.tidy(failed)
    add_segment(seg, "Background", background, volume)
    with pytest.raises(ValueError, match="'Inside' names the classes of a model"):
        sessions.PredictionSession(None, [volume], strokes=seg, inside=["Organ:Background"])
    read = {}
    session = jobs.start_segmentation(None, [volume], device="cpu", strokes=seg, load_results=False,
                                      on_finished=lambda s: read.update(labels=read_volume(
                                          s.prediction_files["phantom"]).array), largest_component=True)
    assert "--model" not in session.worker.command and [c.name for c in session.classes] == ["Background", "Organ"]
    jobs.wait(300)
    assert session.status == "completed", session.error_message
    labels = read.pop("labels")
    jobs.tidy(session)
    assert np.all(labels[organ] == 1) and np.all(labels[background] == 0)
    assert 2 * ((labels == 1) & truth).sum() / ((labels == 1).sum() + truth.sum()) > 0.85
    with pytest.raises(ValueError, match="none without a model"):
        sessions.PredictionSession(None, [volume], strokes=seg, stroke_cache=tmp_path / "c.npz")


def test_sessions_report_failures(scene, tmp_path):
    volume, seg, roi, points = drawn_scene(scene)
    with pytest.raises(FileNotFoundError, match="not a WeakSeg model folder"):
        sessions.PredictionSession(tmp_path, [volume])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text(json.dumps({"classes": [
        {"id": 0, "name": "Background", "color": [0, 0, 0]}, {"id": 1, "name": "Liver", "color": [1, 2, 3]}]}))
    broken = sessions.PredictionSession(tmp_path / "model", [volume], device="cpu", job_dir=tmp_path / "p").start()
    assert broken.wait(timeout=300) == "failed"
    assert "Segmentation failed" in broken.error_message and broken.result_nodes == {}
    empty = new_segmentation(scene, volume, "nothing drawn")
    add_segment(empty, "Liver", np.zeros(SHAPE, bool), volume)
    with pytest.raises(AnnotationError, match="None of the volumes has an annotation"):
        sessions.TrainingSession([(volume, empty)], {"iterations": 1}, job_dir=tmp_path / "t").start()


# ----------------------------------------------------------------------------------------------- module Logic
@pytest.fixture
def weakseg_module(scene, tmp_path, monkeypatch):
    """Import WeakSeg/WeakSeg.py outside Slicer: real MRML (slicer-core), minimal stand-ins for what only
    the application provides (Qt timer, slicer.app, parameter node wrapper, PyTorch extension)."""
    import types
    import unittest

    qt = types.ModuleType("qt")

    class QTimer:
        def setInterval(self, ms):
            pass

        def connect(self, signal_name, slot):
            pass

        def start(self):
            pass

        def stop(self):
            pass

    qt.QTimer = QTimer
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    stores: dict = {}

    def parameterNodeWrapper(cls):
        defaults = {name: getattr(cls, name, None) for name in cls.__annotations__}

        class Wrapped:
            def __init__(self, node):
                self.__dict__["_values"] = stores.setdefault(id(node), dict(defaults))

            def __getattr__(self, name):
                return self._values[name]

            def __setattr__(self, name, value):
                assert name in defaults, f"{name} is not a parameter"
                self._values[name] = value

        return Wrapped

    wrapper.parameterNodeWrapper = parameterNodeWrapper
    wrapper.WithinRange = lambda low, high: None
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    parameter_node = slicer.vtkMRMLScriptedModuleNode()

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            pass

        def getParameterNode(self):
            return parameter_node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, *args, **kwargs):
            pass

    scripted.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = type("PyTorchUtilsLogic", (), {"torchInstalled": lambda self: True})
    for name, module in (("qt", qt), ("slicer.i18n", i18n), ("slicer.parameterNodeWrapper", wrapper),
                         ("slicer.ScriptedLoadableModule", scripted), ("PyTorchUtils", torch_utils)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(
        temporaryPath=str(tmp_path), applicationDirPath=lambda: str(tmp_path / "no-such-dir"),
        processEvents=lambda: None, connect=lambda *args: None, testingEnabled=lambda: True,
        slicerUserSettingsFilePath=str(tmp_path / "settings" / "Slicer.ini")), raising=False)
    monkeypatch.syspath_prepend(str(process.library_root() / "WeakSeg"))
    monkeypatch.delitem(sys.modules, "WeakSeg", raising=False)
    import WeakSeg

    yield WeakSeg
    if WeakSeg.WeakSegLogic._shared is not None:
        WeakSeg.WeakSegLogic._shared.shutdown()
    sys.modules.pop("WeakSeg", None)


@pytest.mark.slow
def test_module_logic_trains_saves_and_segments(weakseg_module, scene, tmp_path):
    """The Logic of WeakSeg.py (what the GUI and WeakSegTest drive) end to end, on a tiny volume."""
    logic = weakseg_module.WeakSegLogic.shared()
    assert weakseg_module.WeakSegLogic.shared() is logic  # the module and the effect share it
    assert logic.ensureDependencies(askConfirmation=False)
    shape = (16, 24, 24)
    volume, seg = sphere_with_scribbles(scene, shape, "tiny")
    mrml.set_segment_priors(seg, "Organ", size_range_ml=(0.3, 0.8))

    session = logic.train([(volume, seg)], minutes=5, iterations=20, device="cpu", timeoutS=600,
                          probabilities=True)
    assert session.status == "completed", session.error_message
    (result,) = session.result_nodes.values()
    assert result.GetName() == "tiny WeakSeg" and result.GetAttribute(mrml.ATTR_RESULT) == "true"
    # The model is kept outside the job folder, which (holding patient images) is deleted.
    kept = logic.getParameterNode().modelPath
    assert kept == str(tmp_path / "settings" / "WeakSeg" / "models" / "current")
    assert protocol.model_classes(kept)[1].name == "Organ" and not session.job_dir.exists()
    assert not logic.isRunning() and session.history
    assert logic.chartNode is not None and logic.chartNode.GetNumberOfPlotSeriesNodes() > 0
    assert not logic.chartNode.GetSaveWithScene()
    (probability,) = session.probability_nodes["tiny"]
    assert probability.GetName() == "tiny Organ probability"
    values = slicer.util.arrayFromVolume(probability)
    assert values.shape == shape and 0.0 <= values.min() and values.max() <= 1.0
    again = logic.train([(volume, seg)], iterations=2, device="cpu", timeoutS=600)
    assert again.status == "completed" and again.result_nodes["tiny"] is result  # the result is updated

    saved = logic.saveModel(str(tmp_path / "my model"))
    assert logic.getParameterNode().modelPath == saved and (tmp_path / "my model" / "model.json").is_file()
    assert [c.name for c in logic.loadModel(saved)] == ["Background", "Organ"]
    chosen = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chosen output")
    prediction = logic.segment([volume], device="cpu", timeoutS=600, targets={"tiny": chosen})
    assert prediction.status == "completed", prediction.error_message
    assert prediction.result_nodes == {"tiny": chosen} and chosen.GetName() == "chosen output"
    assert chosen.GetSegmentation().GetNumberOfSegments() == 1
    with pytest.raises(ValueError, match="no model yet"):
        logic.getParameterNode().modelPath = ""
        logic.startSegmentation([volume])
    # withoutModel (the Segment Editor effect without a model): the strokes completed on their own.
    completed = logic.startSegmentation([volume], device="cpu", strokes=seg, loadResults=False, withoutModel=True)
    assert "--model" not in completed.worker.command
    assert logic.waitForCompletion(600) is completed and completed.status == "completed", completed.error_message
    assert list(completed.prediction_files) == ["tiny"]


def test_module_logic_sends_only_the_budget_given(weakseg_module, monkeypatch):
    """The Logic adds no budget default of its own: iterations alone reach the worker with no time limit."""
    from WeakSegLib.config import TrainConfig

    sent = []

    class RecordingSession:
        kind = "training"

        def __init__(self, cases, config, *args, **kwargs):
            sent.append(dict(config))
            self.job_dir = "job"
            self.status = "running"

        def start(self):
            return self

    monkeypatch.setattr(sessions, "TrainingSession", RecordingSession)
    logic = weakseg_module.WeakSegLogic.shared()
    for budget in ({"iterations": 300}, {"minutes": 5}, {"minutes": 5, "iterations": 20}, {}):
        logic.runner.session = None
        logic.startTraining([], **budget)
        config = sent[-1]
        assert {key: config[key] for key in ("minutes", "iterations") if key in config} == budget
        trained = TrainConfig.from_dict(config)
        assert (trained.minutes, trained.iterations) == (budget.get("minutes", None if budget else 2.0),
                                                          budget.get("iterations"))
    logic.runner.session = None


def test_one_job_at_a_time_and_scene_close(weakseg_module, scene, tmp_path):
    """A second job is refused while one runs; closing the scene cancels it, loads nothing and raises nothing."""
    from WeakSegSlicerLib.runner import JobAlreadyRunning

    logic = weakseg_module.WeakSegLogic.shared()
    shape = (12, 24, 24)
    volume = mrml.volume_to_node(Volume(np.random.default_rng(0).normal(0, 1, shape).astype(np.float32),
                                        Geometry(shape)), "closing")
    seg = new_segmentation(scene, volume, "closing scribbles")
    organ = np.zeros(shape, bool)
    organ[6, 10:14, 10:14] = True
    add_segment(seg, "Background", np.roll(organ, 8, axis=2), volume)
    add_segment(seg, "Organ", organ, volume)
    session = logic.startTraining([(volume, seg)], minutes=10, device="cpu")
    with pytest.raises(JobAlreadyRunning, match="already running"):
        logic.startTraining([(volume, seg)], iterations=1, device="cpu")
    scene.Clear(0)                       # File > Close scene: StartCloseEvent reaches the Logic
    assert session.discarded and session.worker.cancel_requested
    finished = logic.waitForCompletion(timeoutS=300)
    assert finished is session and session.status in ("cancelled", "completed"), session.error_message
    assert session.result_nodes == {} and not session.job_dir.exists()


@pytest.mark.slow
def test_self_test_runs_outside_qt(weakseg_module, scene):
    """WeakSegTest's logic (WeakSegSlicerLib.selftest) through the module's Logic, as Slicer runs it."""
    from WeakSegSlicerLib import selftest

    start = time.monotonic()
    result = selftest.run_self_test(weakseg_module.WeakSegLogic.shared(), scene)
    assert time.monotonic() - start < 180
    assert set(result["dice"]) == {"Organ", "Lesion"}
    assert min(result["dice"].values()) >= selftest.MIN_DICE


def test_self_test_skips_with_the_reason_when_a_dependency_is_missing(weakseg_module, monkeypatch):
    """In testing mode nothing is installed (pip_ensure skips installs there): WeakSegTest skips, saying why."""
    import unittest

    monkeypatch.setattr(sys.modules["PyTorchUtils"].PyTorchUtilsLogic, "torchInstalled", lambda self: False)
    result = unittest.TestResult()
    weakseg_module.WeakSegTest("test_WeakSegTrainAndSegment").run(result)
    assert not result.failures and not result.errors
    assert len(result.skipped) == 1 and "PyTorch is not installed" in result.skipped[0][1]

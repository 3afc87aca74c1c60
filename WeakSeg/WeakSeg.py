"""WeakSeg: weakly supervised segmentation in 3D Slicer.

Paint a few scribbles (segments = classes, a segment named "Background" marks background), add
boxes (markups ROI) or points, say which structures are present and how large they are, and WeakSeg
trains a CNN in a background process and returns full segmentations.

Layout of Slicer's module template: WeakSeg (module) / WeakSegParameterNode / WeakSegWidget (wires
the GUI only) / WeakSegLogic (usable from the Python console without the GUI) / WeakSegTest.
Everything that can be tested without Qt lives in ``WeakSegLib.mrml`` (the MRML bridge) and in
``WeakSegSlicerLib`` beside this file (job runner, sessions, worker process, charts, tables,
dependencies, self-test); the training itself runs in a ``PythonSlicer -m WeakSegLib worker``
process, so an error or an out-of-memory in training never takes Slicer down.  Dependencies are
installed on first use only, after asking.  One Logic (``WeakSegLogic.shared()``) serves the module
and the Segment Editor effect, so one job runs at a time.
"""

import logging
import os
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _add_source_checkout_to_path() -> None:
    """Run from a clone (this folder added to Slicer's module paths), the core library ``WeakSegLib`` sits
    next to this folder: make it importable.  An installed extension has it beside the module already."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, "WeakSegLib", "__init__.py")) and checkout not in sys.path:
        sys.path.append(checkout)


_add_source_checkout_to_path()


#
# WeakSeg
#


class WeakSeg(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("WeakSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["WeakSeg developers"]
        self.parent.helpText = _("""
Weakly supervised segmentation: train a CNN from scribbles, points, boxes, present/absent tags,
size ranges and partial masks, then segment the annotated volumes and new ones.
<ol>
<li>In Segment Editor, paint a few strokes in each structure (one segment per structure) and in a
segment named <b>Background</b>; or use the <b>Weak annotation</b> effect, which also adds boxes,
points and priors.</li>
<li>Here, add the cases (volume + annotation), adjust the priors, choose a time budget, click
<b>Train</b>.</li>
<li>Results appear as segmentations named "&lt;volume&gt; WeakSeg" in the volume's study (updated on every
run). Save the model to reuse it.</li>
</ol>
Documentation: README.md and docs/slicer.md in the WeakSeg source.
""")
        self.parent.acknowledgementText = _("""
WeakSeg builds on MONAI (DynUNet), PyTorch and 3D Slicer. Its training objective follows published
weakly supervised segmentation methods (partial cross-entropy, size and tag constraints, box priors,
SMILE partial labels); see the documentation for references.
""")
        # The Segment Editor effect and the sample case are registered once the application has started.
        slicer.app.connect("startupCompleted()", _registerOnStartup)


def _registerOnStartup():
    from WeakSegSlicerLib.registration import register_on_startup

    register_on_startup(lambda: WeakSegLogic.shared().ensureDependencies())


@parameterNodeWrapper
class WeakSegParameterNode:
    """
    The parameters of the module, saved with the scene.

    caseVolumes / caseSegmentations - the training cases: a volume and the segmentation annotating it.
    minutes - training time budget (wall clock).
    device - "auto", "cpu" or "cuda".
    mode - learning mode (WeakSegLib.training.modes: "standard", "mean-teacher", "smiler", ...).
    startFromModel - fine-tune the current model instead of training from scratch.
    modelPath - folder of the current model ("" when there is none).
    segmentVolume - the volume "Segment selected volume" segments.
    outputSegmentation - the segmentation that receives its result (None: the volume's earlier result or a new one).
    show3D - show results in 3D.  probabilities - also load each class's probability map.
    """

    caseVolumes: list[vtkMRMLScalarVolumeNode]
    caseSegmentations: list[vtkMRMLSegmentationNode]
    minutes: Annotated[float, WithinRange(0.1, 1440.0)] = 2.0
    device: str = "auto"
    mode: str = "standard"
    startFromModel: bool = False
    modelPath: str = ""
    segmentVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    show3D: bool = False
    probabilities: bool = False


class WeakSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: wires widgets to the Logic, WeakSegLib.mrml and WeakSegSlicerLib, computes nothing itself.
    The cases and priors tables and the device / learning-mode selectors are wired in
    WeakSegSlicerLib.panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._priorRows = []
        self.panel = None

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/WeakSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = WeakSegLogic.shared()
        self.logic.logCallback = self.appendLog
        self.logic.keepJobFolders = slicer.util.settingsValue("WeakSeg/KeepJobFolders", False,
                                                              converter=slicer.util.toBool)
        from WeakSegSlicerLib.panel import ModulePanel

        self.panel = ModulePanel(self)
        self.panel.setupSelectors()

        casesHeader = self.ui.casesTable.horizontalHeader()
        casesHeader.setSectionResizeMode(self.panel.CASE_VOLUME_COLUMN, qt.QHeaderView.Interactive)
        casesHeader.setSectionResizeMode(self.panel.CASE_SEGMENTATION_COLUMN, qt.QHeaderView.Interactive)
        self.ui.classesTable.horizontalHeader().setSectionResizeMode(qt.QHeaderView.ResizeToContents)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.addCaseButton.connect("clicked(bool)", self.panel.onAddCase)
        self.ui.removeCaseButton.connect("clicked(bool)", self.panel.onRemoveCases)
        self.ui.addAllCasesButton.connect("clicked(bool)", self.panel.onAddAllCases)
        self.ui.refreshCasesButton.connect("clicked(bool)", self.panel.refreshTables)
        self.ui.classesTable.connect("cellChanged(int,int)", self.panel.onPriorCellChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.panel.onDeviceChanged)
        self.modeComboBox.connect("currentIndexChanged(int)", self.panel.onModeChanged)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showChartButton.connect("clicked(bool)", self.onShowChart)
        self.ui.saveModelButton.connect("clicked(bool)", self.onSaveModel)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModel)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3D)

        self.initializeParameterNode()
        self.setRunning(False)

    def cleanup(self) -> None:
        """Called when the application closes: never leave a worker behind."""
        self.removeObservers()
        if self.logic:
            self.logic.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # In the .ui file, the dynamic property "SlicerParameterName" connects widgets to parameters.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
            self.panel.casesTableFromParameterNode()
            self.updateGuiState()

    def updateGuiState(self, caller=None, event=None) -> None:
        """Enable buttons, show the model path and the device from the parameter node."""
        if not self._parameterNode:
            return
        modelPath = self._parameterNode.modelPath
        self.ui.modelPathLabel.text = modelPath if modelPath else _("none (train or load one)")
        hasModel = bool(modelPath)
        running = self.logic.isRunning()
        self.ui.saveModelButton.enabled = hasModel and not running
        self.ui.segmentButton.enabled = hasModel and not running and self._parameterNode.segmentVolume is not None
        self.ui.startFromModelCheckBox.enabled = hasModel
        self.panel.updateSelectors()

    def setRunning(self, running: bool) -> None:
        self.ui.trainButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.loadModelButton.enabled = not running
        self.updateGuiState()

    # ------------------------------------------------------------------------------------------ training
    def onTrain(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            pairs = self.panel.casesFromTable()
            if not pairs:
                raise ValueError(_("Add at least one case: a volume and the segmentation you annotated on it."))
            if not self.logic.ensureDependencies():
                return
            parameterNode = self._parameterNode
            initModel = parameterNode.modelPath if parameterNode.startFromModel and parameterNode.modelPath else None
            self.ui.logTextEdit.clear()
            self.setProgress(0.0)
            self.ui.statusLabel.text = _("Preparing the training job...")
            slicer.app.processEvents()
            self.logic.startTraining(pairs, minutes=parameterNode.minutes, device=parameterNode.device,
                                     mode=parameterNode.mode, initModel=initModel, onUpdate=self.onSessionUpdate,
                                     onFinished=self.onSessionFinished, probabilities=parameterNode.probabilities)
            self.setRunning(True)

    def onSegment(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            volumeNode = self._parameterNode.segmentVolume
            if volumeNode is None:
                raise ValueError(_("Select the volume to segment."))
            if not self.logic.ensureDependencies():
                return
            self.setProgress(None)
            self.ui.statusLabel.text = _("Segmenting {name}...").format(name=volumeNode.GetName())
            from WeakSegLib.mrml import case_id_for

            output = self._parameterNode.outputSegmentation
            self.logic.startSegmentation([volumeNode], device=self._parameterNode.device, onUpdate=self.onSessionUpdate,
                                         onFinished=self.onSessionFinished,
                                         targets={case_id_for(volumeNode.GetName()): output} if output else None)
            self.setRunning(True)

    def onCancel(self) -> None:
        self.ui.statusLabel.text = _("Cancelling: the worker saves the last good model...")
        self.logic.cancel()

    def setProgress(self, fraction) -> None:
        """The progress bar: a fraction in [0, 1], or None for a busy bar (a job that reports no fraction)."""
        if fraction is None:
            self.ui.progressBar.setRange(0, 0)
            return
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = int(round(100 * min(max(fraction, 0.0), 1.0)))

    def onSessionUpdate(self, session, messages) -> None:
        from WeakSegSlicerLib.charts import format_eta

        self.setProgress(None if session.indeterminate else session.fraction)
        eta = format_eta(session.eta_s)
        text = session.message or (_("Training...") if session.kind == "training" else _("Working..."))
        self.ui.statusLabel.text = text + (("  " + _("ETA {eta}").format(eta=eta)) if eta else "")

    def onShow3D(self, show: bool) -> None:
        from WeakSegLib.mrml import show_in_3d

        session = self.logic.session
        for node in (session.result_nodes.values() if session is not None else ()):
            if node.GetScene() is not None:
                show_in_3d(node, show)

    def onSessionFinished(self, session) -> None:
        self.setRunning(False)
        self.setProgress(session.fraction)
        names = ", ".join(node.GetName() for node in session.result_nodes.values())
        if session.kind == "prediction" and session.result_nodes and self._parameterNode:
            self._parameterNode.outputSegmentation = next(iter(session.result_nodes.values()))
        if session.status == "completed":
            self.setProgress(1.0)
            self.ui.statusLabel.text = _("Done. Results: {names}").format(names=names or _("none"))
        elif session.status == "cancelled":
            self.ui.statusLabel.text = _("Cancelled. Results: {names}").format(names=names or _("none"))
        else:
            self.ui.statusLabel.text = session.error_message
            slicer.util.errorDisplay(session.error_message, windowTitle=_("WeakSeg"))
        self.updateGuiState()

    def appendLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def onShowChart(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not show the loss curves.")):
            if not self.logic.showChart():
                slicer.util.infoDisplay(_("The curves appear once training has started."))

    # ------------------------------------------------------------------------------------------ model
    def onSaveModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Save the WeakSeg model in folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("The model could not be saved."), waitCursor=True):
            path = self.logic.saveModel(folder)
            slicer.util.showStatusMessage(_("Model saved in {path}").format(path=path), 5000)

    def onLoadModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Load a WeakSeg model folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("The model could not be loaded."), waitCursor=True):
            classes = self.logic.loadModel(folder)
            slicer.util.showStatusMessage(_("Model loaded: classes {names}").format(
                names=", ".join(c.name for c in classes)), 5000)


class WeakSegLogic(ScriptedLoadableModuleLogic):
    """Runs WeakSeg without the GUI (Python console, tests, the Segment Editor effect).

    One instance serves the module's GUI and the Segment Editor effect (:meth:`shared`), so one job
    runs at a time.  Jobs run in a background ``PythonSlicer`` process through
    WeakSegSlicerLib.runner's JobRunner; a QTimer polls its JSON-lines progress.  Example::

        logic = WeakSegLogic.shared()
        session = logic.train([(volumeNode, segmentationNode)], minutes=2)   # waits
        session.result_nodes    # case id -> "<volume> WeakSeg" segmentation node
    """

    POLL_INTERVAL_MS = 500
    _shared = None

    @classmethod
    def shared(cls):
        """The one Logic of the application (created on first use)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.logCallback = None
        self.chartTableNode = None
        self.chartNode = None
        self.keepJobFolders = False
        self._runner = None
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onTimer)
        self._sceneObserver = slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)

    def getParameterNode(self):
        return WeakSegParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------------------------------ environment
    @staticmethod
    def moduleDir() -> str:
        return os.path.dirname(os.path.abspath(__file__))

    def requirementsPath(self) -> str:
        return os.path.join(self.moduleDir(), "Resources", "requirements.txt")

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what the worker needs, on first use only, after asking; False if the user declines.  In
        testing mode nothing is installed: a missing package raises DependenciesMissing."""
        from WeakSegSlicerLib.dependencies import ensure_dependencies

        testing = bool(getattr(slicer.app, "testingEnabled", lambda: False)())
        return ensure_dependencies(self.requirementsPath(), askConfirmation, testing=testing)

    def pythonExecutable(self) -> str:
        """PythonSlicer next to the application (as SlicerMONAIAuto3DSeg launches its processes)."""
        from WeakSegSlicerLib.process import find_python_executable

        return find_python_executable(slicer.app.applicationDirPath())

    def modelsDir(self) -> str:
        """Where the current model is kept between sessions (next to Slicer's settings, not in the
        temporary folder)."""
        settings = getattr(slicer.app, "slicerUserSettingsFilePath", "") or ""
        base = os.path.dirname(settings) if settings else slicer.app.temporaryPath
        return os.path.join(base, "WeakSeg", "models")

    @property
    def runner(self):
        if self._runner is None:
            from WeakSegSlicerLib.runner import JobRunner

            self._runner = JobRunner(os.path.join(slicer.app.temporaryPath, "WeakSeg"), self.modelsDir(),
                                     self.pythonExecutable(), log=self.log)
            self._runner.on_history = self.updateChart
        self._runner.keep_job_folders = self.keepJobFolders
        return self._runner

    @property
    def session(self):
        return self._runner.session if self._runner is not None else None

    def newJobDir(self, kind: str) -> str:
        return str(self.runner.new_job_dir(kind))

    def log(self, text: str) -> None:
        logging.info("WeakSeg: %s", text)
        if self.logCallback:
            self.logCallback(text)

    # ------------------------------------------------------------------------------------------ jobs
    def isRunning(self) -> bool:
        return self._runner is not None and self._runner.is_running()

    def startTraining(self, cases, minutes=None, device: str = "auto", iterations=None, seed: int = 0,
                      initModel=None, predictVolumeNodes=None, loadResults: bool = True, onUpdate=None,
                      onFinished=None, mode: str = "standard", modeOptions: dict | None = None,
                      probabilities: bool = False, targets: dict | None = None):
        """Start training on ``cases`` ((volume, segmentation) pairs or WeakSegLib.mrml.CaseNodes);
        returns the TrainingSession at once.  ``onUpdate(session, messages)`` and ``onFinished(session)``
        are called from the GUI thread.  The budget is what is given, with TrainConfig's one rule:
        ``minutes`` alone is a time limit, ``iterations`` alone exactly that many iterations (no time
        limit), both whichever comes first, neither TrainConfig's default.  ``targets``: case id ->
        segmentation node to update (default: each volume's earlier result, else a new node)."""
        config = {"device": device or "auto", "seed": int(seed), "mode": mode or "standard",
                  "mode_options": dict(modeOptions or {})}
        if minutes is not None:
            config["minutes"] = float(minutes)
        if iterations:
            config["iterations"] = int(iterations)
        if initModel:
            config["init_model"] = str(initModel)
        session = self.runner.start_training(cases, config, predictVolumeNodes, load_results=loadResults,
                                             probabilities=probabilities, targets=targets, on_update=onUpdate,
                                             on_finished=self._finished(onFinished))
        self.timer.start()
        return session

    def startSegmentation(self, volumeNodes, modelPath=None, device: str = "auto", onUpdate=None, onFinished=None,
                          targets: dict | None = None, strokes=None, loadResults: bool = True, strokeCache=None,
                          largestComponent: bool = False, withoutModel: bool = False, inside=()):
        """Segment volumes with a model folder (default: the current model; ``withoutModel``: ``strokes``
        completed on their own) in the background; see WeakSegSlicerLib.sessions.PredictionSession."""
        modelPath = None if withoutModel else (modelPath or self.getParameterNode().modelPath)
        if not modelPath and not withoutModel:
            raise ValueError(_("There is no model yet: train one or load a saved model first."))
        session = self.runner.start_segmentation(modelPath, volumeNodes, device=device, targets=targets,
                                                 on_update=onUpdate, on_finished=self._finished(onFinished),
                                                 strokes=strokes, load_results=loadResults, stroke_cache=strokeCache,
                                                 largest_component=largestComponent, inside=inside)
        self.timer.start()
        return session

    def _finished(self, onFinished):
        def finished(session):
            kept = getattr(session, "kept_model_dir", None)
            if kept:
                self.getParameterNode().modelPath = str(kept)
            if session.result_nodes and self.getParameterNode().show3D:
                from WeakSegLib.mrml import show_in_3d

                for node in session.result_nodes.values():
                    show_in_3d(node, True)
            if onFinished:
                onFinished(session)
        return finished

    def onTimer(self) -> None:
        """Poll the worker (never blocks); the runner finishes the session when its process has ended."""
        if not self.isRunning() or not self.runner.poll(slicer.mrmlScene):
            self.timer.stop()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        """The scene is closing: a running job is cancelled and its results are not loaded."""
        if self.isRunning():
            self.runner.scene_closing()
        self.chartTableNode = self.chartNode = None

    def waitForCompletion(self, timeoutS=None):
        """Block (processing events) until the current job is done; cancel it after ``timeoutS``."""
        session = self.runner.wait(timeoutS, slicer.mrmlScene, process_events=slicer.app.processEvents)
        self.timer.stop()
        return session

    def train(self, cases, minutes=None, device: str = "auto", iterations=None, seed: int = 0,
              initModel=None, predictVolumeNodes=None, timeoutS=None, probabilities: bool = False):
        """Train and wait (scripts, tests); returns the finished TrainingSession.  Budget: see startTraining."""
        self.startTraining(cases, minutes, device, iterations, seed, initModel, predictVolumeNodes,
                           probabilities=probabilities)
        return self.waitForCompletion(timeoutS)

    def segment(self, volumeNodes, modelPath=None, device: str = "auto", timeoutS=None, targets=None):
        """Segment and wait (scripts, tests); returns the finished PredictionSession."""
        self.startSegmentation(volumeNodes, modelPath, device, targets=targets)
        return self.waitForCompletion(timeoutS)

    def cancel(self, graceS: float = 60.0, discard: bool = False) -> None:
        """Stop the running job: a training saves the model of its current state; killed after graceS."""
        if self.isRunning():
            self.runner.cancel(graceS, discard=discard)

    def shutdown(self) -> None:
        """Kill a running worker now and remove the working nodes (application exit)."""
        from WeakSegSlicerLib.charts import remove_progress_chart

        self.timer.stop()
        if self._runner is not None:
            self._runner.shutdown()
        slicer.mrmlScene.RemoveObserver(self._sceneObserver)
        remove_progress_chart(slicer.mrmlScene)

    # ------------------------------------------------------------------------------------------ curves, models
    def progressChart(self):
        """The loss-curve table and chart nodes (hidden, not saved with the scene), created on first use."""
        from WeakSegSlicerLib.charts import ensure_progress_chart

        if self.chartNode is None or self.chartNode.GetScene() is None:
            self.chartTableNode, self.chartNode = ensure_progress_chart(slicer.mrmlScene)
        return self.chartTableNode, self.chartNode

    def updateChart(self, history) -> None:
        from WeakSegSlicerLib.charts import update_progress_chart

        update_progress_chart(*self.progressChart(), history)

    def showChart(self) -> bool:
        """Show the loss/constraint curves in the layout's plot view (on request only: it changes the
        layout); False when there are none yet."""
        _table, chart = self.progressChart()
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        return chart.GetNumberOfPlotSeriesNodes() > 0

    def saveModel(self, folder: str) -> str:
        """Copy the current model folder to ``folder`` and make that copy the current model."""
        parameterNode = self.getParameterNode()
        if not parameterNode.modelPath:
            raise ValueError(_("There is no model to save yet: train one first."))
        from WeakSegSlicerLib.models import copy_model_folder

        path = str(copy_model_folder(parameterNode.modelPath, folder))
        parameterNode.modelPath = path
        return path

    def loadModel(self, folder: str):
        """Make a saved model folder the current model; returns its classes."""
        from WeakSegLib.jobs.protocol import model_classes

        classes = model_classes(folder)
        self.getParameterNode().modelPath = str(folder)
        return classes


class WeakSegTest(ScriptedLoadableModuleTest):
    """Runs the Logic end to end on a tiny phantom in under 3 minutes on a CPU (WeakSegSlicerLib.selftest):
    scribbles -> training in the worker with an iteration budget -> a result whose every class reaches
    the Dice threshold -> segmenting again with the kept model.  Skipped, with the reason, when a
    dependency is missing in testing mode (nothing is installed there)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WeakSegTrainAndSegment()

    def test_WeakSegTrainAndSegment(self):
        from WeakSegSlicerLib.dependencies import DependenciesMissing
        from WeakSegSlicerLib.selftest import run_self_test

        logic = WeakSegLogic.shared()
        self.delayDisplay("Checking dependencies (PyTorch, MONAI)")
        try:
            if not logic.ensureDependencies(askConfirmation=False):
                self.skipTest("WeakSeg's dependencies were not installed.")
        except DependenciesMissing as exc:
            self.skipTest(f"WeakSeg self-test skipped: {exc}")
        result = run_self_test(logic, slicer.mrmlScene, step=self.delayDisplay)
        self.delayDisplay(f"Test passed: Dice per class {result['dice']}")

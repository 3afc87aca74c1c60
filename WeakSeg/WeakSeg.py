"""WeakSeg: weakly supervised segmentation in 3D Slicer.

Paint a few scribbles (segments = classes, a segment named "Background" marks background), add
boxes (markups ROI) or points, say which structures are present and how large they are, and WeakSeg
trains a CNN in a background process and returns full segmentations.

Layout of Slicer's module template: WeakSeg (module) / WeakSegParameterNode / WeakSegWidget (wires
the GUI only) / WeakSegLogic (usable from the Python console without the GUI) / WeakSegTest.
Everything that can be tested without Qt lives in ``WeakSegLib.mrml`` (the MRML bridge) and in
``WeakSegSlicerLib`` beside this file (sessions, worker process, charts, tables, dependencies); the
training itself runs in a ``PythonSlicer -m WeakSegLib worker`` process, so an error or an
out-of-memory in training never takes Slicer down.  Dependencies are installed on first use only,
after asking.
"""

import logging
import os
import sys
import time
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

MINIMUM_TORCH_VERSION = "2.1"


def _add_source_checkout_to_path() -> None:
    """Run from a clone (this folder added to Slicer's module paths), the core library ``WeakSegLib`` sits
    next to this folder: make it importable.  An installed extension has it beside the module already."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, "WeakSegLib", "__init__.py")) and checkout not in sys.path:
        sys.path.append(checkout)


_add_source_checkout_to_path()


def _mrml():
    """WeakSegLib.mrml, imported on first use (never at module import: numpy/SimpleITK come with
    Slicer, but WeakSegLib may need packages that are installed on first use).  WeakSegSlicerLib's
    modules are imported on first use for the same reason."""
    from WeakSegLib import mrml

    return mrml


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
<li>Results appear as new segmentations named "&lt;volume&gt; WeakSeg". Save the model to reuse it.</li>
</ol>
See the <a href="https://github.com/weakseg/SlicerWeakSeg">documentation</a>.
""")
        self.parent.acknowledgementText = _("""
WeakSeg builds on MONAI (DynUNet), PyTorch and 3D Slicer. Its training objective follows published
weakly supervised segmentation methods (partial cross-entropy, size and tag constraints, box priors,
SMILE partial labels); see the documentation for references.
""")
        # The Segment Editor effect is registered once the application has started.
        slicer.app.connect("startupCompleted()", registerWeakAnnotationEffect)


def registerWeakAnnotationEffect():
    """Register the "Weak annotation" Segment Editor effect (as Slicer's effect template does)."""
    try:
        import qSlicerSegmentationsEditorEffectsPythonQt as effects
    except ImportError:  # e.g. Slicer started without the Segmentations module
        logging.warning("WeakSeg: Segment Editor effects are unavailable; the Weak annotation effect is not "
                        "registered.")
        return
    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    effectPath = os.path.join(os.path.dirname(__file__), "SegmentEditorWeakAnnotationLib", "SegmentEditorEffect.py")
    instance.setPythonSource(effectPath.replace("\\", "/"))
    instance.self().register()


#
# WeakSegParameterNode
#


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
    """

    caseVolumes: list[vtkMRMLScalarVolumeNode]
    caseSegmentations: list[vtkMRMLSegmentationNode]
    minutes: Annotated[float, WithinRange(0.1, 1440.0)] = 2.0
    device: str = "auto"
    mode: str = "standard"
    startFromModel: bool = False
    modelPath: str = ""
    segmentVolume: vtkMRMLScalarVolumeNode


#
# WeakSegWidget
#


class WeakSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: wires widgets to the Logic, WeakSegLib.mrml and WeakSegSlicerLib, computes nothing itself."""

    CASE_VOLUME_COLUMN, CASE_SEGMENTATION_COLUMN, CASE_STATUS_COLUMN = 0, 1, 2
    PRIOR_NAME, PRIOR_CASE, PRIOR_MIN, PRIOR_MAX, PRIOR_PRESENCE, PRIOR_COMPLETE = range(6)

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._priorRows = []

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/WeakSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = WeakSegLogic()
        self.logic.logCallback = self.appendLog

        self.ui.deviceComboBox.addItem(_("Auto"), "auto")
        self.ui.deviceComboBox.addItem(_("CPU"), "cpu")
        gpuName = self.logic.gpuName()
        self.ui.deviceComboBox.addItem(_("GPU: {name}").format(name=gpuName) if gpuName else _("GPU (none detected)"),
                                       "cuda")
        model = self.ui.deviceComboBox.model()
        if not gpuName and hasattr(model, "item"):
            model.item(2).setEnabled(False)

        # Learning mode (semi-supervised families, SMILEr, CAM, box rounds): next to the device selector.
        self.modeComboBox = qt.QComboBox()
        self.modeComboBox.toolTip = _(
            "How WeakSeg learns beyond the annotations' own terms (see docs/learning-modes.md).")
        for name, summary, paper in self.logic.learningModes():
            self.modeComboBox.addItem(name, name)
            self.modeComboBox.setItemData(self.modeComboBox.count - 1, f"{summary}\n{paper}", qt.Qt.ToolTipRole)
        deviceLayout = self.ui.deviceComboBox.parentWidget().layout()
        if hasattr(deviceLayout, "addRow"):
            deviceLayout.addRow(_("Learning mode:"), self.modeComboBox)
        else:
            deviceLayout.addWidget(self.modeComboBox)

        casesHeader = self.ui.casesTable.horizontalHeader()
        casesHeader.setSectionResizeMode(self.CASE_VOLUME_COLUMN, qt.QHeaderView.Interactive)
        casesHeader.setSectionResizeMode(self.CASE_SEGMENTATION_COLUMN, qt.QHeaderView.Interactive)
        self.ui.classesTable.horizontalHeader().setSectionResizeMode(qt.QHeaderView.ResizeToContents)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveCases)
        self.ui.addAllCasesButton.connect("clicked(bool)", self.onAddAllCases)
        self.ui.refreshCasesButton.connect("clicked(bool)", self.refreshTables)
        self.ui.classesTable.connect("cellChanged(int,int)", self.onPriorCellChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.modeComboBox.connect("currentIndexChanged(int)", self.onModeChanged)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showChartButton.connect("clicked(bool)", self.onShowChart)
        self.ui.saveModelButton.connect("clicked(bool)", self.onSaveModel)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModel)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)

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
            self.casesTableFromParameterNode()
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
        modeIndex = self.modeComboBox.findData(self._parameterNode.mode)
        if modeIndex >= 0 and modeIndex != self.modeComboBox.currentIndex:
            wasBlocked = self.modeComboBox.blockSignals(True)
            self.modeComboBox.currentIndex = modeIndex
            self.modeComboBox.blockSignals(wasBlocked)
        index = self.ui.deviceComboBox.findData(self._parameterNode.device)
        if index >= 0 and index != self.ui.deviceComboBox.currentIndex:
            wasBlocked = self.ui.deviceComboBox.blockSignals(True)
            self.ui.deviceComboBox.currentIndex = index
            self.ui.deviceComboBox.blockSignals(wasBlocked)

    def setRunning(self, running: bool) -> None:
        self.ui.trainButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.loadModelButton.enabled = not running
        self.updateGuiState()

    # ------------------------------------------------------------------------------------------ cases table
    def _newNodeSelector(self, nodeType: str, node, toolTip: str):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = [nodeType]
        selector.noneEnabled = True
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.renameEnabled = False
        selector.showChildNodeTypes = False
        selector.setMRMLScene(slicer.mrmlScene)
        selector.setCurrentNode(node)
        selector.setToolTip(toolTip)
        selector.connect("currentNodeChanged(vtkMRMLNode*)", self.onCasesEdited)
        return selector

    def addCaseRow(self, volumeNode=None, segmentationNode=None) -> None:
        table = self.ui.casesTable
        row = table.rowCount
        table.insertRow(row)
        table.setCellWidget(row, self.CASE_VOLUME_COLUMN,
                            self._newNodeSelector("vtkMRMLScalarVolumeNode", volumeNode, _("Volume to train on")))
        table.setCellWidget(row, self.CASE_SEGMENTATION_COLUMN,
                            self._newNodeSelector("vtkMRMLSegmentationNode", segmentationNode,
                                                  _("Segmentation with the scribbles painted on this volume")))
        statusItem = qt.QTableWidgetItem("")
        statusItem.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
        table.setItem(row, self.CASE_STATUS_COLUMN, statusItem)

    def casesFromTable(self) -> list:
        """``(volume, segmentation)`` of the complete rows."""
        pairs = []
        for row in range(self.ui.casesTable.rowCount):
            volumeNode = self.ui.casesTable.cellWidget(row, self.CASE_VOLUME_COLUMN).currentNode()
            segmentationNode = self.ui.casesTable.cellWidget(row, self.CASE_SEGMENTATION_COLUMN).currentNode()
            if volumeNode is not None and segmentationNode is not None:
                pairs.append((volumeNode, segmentationNode))
        return pairs

    def casesTableFromParameterNode(self) -> None:
        self._updatingGui = True
        try:
            self.ui.casesTable.setRowCount(0)
            volumes = [v for v in self._parameterNode.caseVolumes]
            segmentations = [s for s in self._parameterNode.caseSegmentations]
            for volumeNode, segmentationNode in zip(volumes, segmentations):
                if volumeNode is not None and segmentationNode is not None:
                    self.addCaseRow(volumeNode, segmentationNode)
        finally:
            self._updatingGui = False
        self.refreshTables()

    def casesToParameterNode(self) -> None:
        if not self._parameterNode:
            return
        pairs = self.casesFromTable()
        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self._parameterNode.caseVolumes = [v for v, _s in pairs]
            self._parameterNode.caseSegmentations = [s for _v, s in pairs]

    def onAddCase(self) -> None:
        from WeakSegSlicerLib.tables import annotated_pairs

        used = {v.GetID() for v, _s in self.casesFromTable()}
        for volumeNode, segmentationNode in annotated_pairs(slicer.mrmlScene):
            if volumeNode.GetID() not in used:
                self.addCaseRow(volumeNode, segmentationNode)
                break
        else:
            self.addCaseRow()
        self.onCasesEdited()

    def onRemoveCases(self) -> None:
        rows = sorted({index.row() for index in self.ui.casesTable.selectedIndexes()}, reverse=True)
        if not rows and self.ui.casesTable.rowCount:
            rows = [self.ui.casesTable.rowCount - 1]
        for row in rows:
            self.ui.casesTable.removeRow(row)
        self.onCasesEdited()

    def onAddAllCases(self) -> None:
        from WeakSegSlicerLib.tables import annotated_pairs

        present = {(v.GetID(), s.GetID()) for v, s in self.casesFromTable()}
        for volumeNode, segmentationNode in annotated_pairs(slicer.mrmlScene):
            if (volumeNode.GetID(), segmentationNode.GetID()) not in present:
                self.addCaseRow(volumeNode, segmentationNode)
        self.onCasesEdited()

    def onCasesEdited(self, node=None) -> None:
        if self._updatingGui:
            return
        self.casesToParameterNode()
        self.refreshTables()

    def refreshTables(self) -> None:
        """Status of each case and the priors table (reads the annotations; nothing is modified)."""
        from WeakSegSlicerLib.tables import case_status

        pairs = self.casesFromTable()
        classes = _mrml().classes_from_segmentations(s for _v, s in pairs) if pairs else None
        for row in range(self.ui.casesTable.rowCount):
            volumeNode = self.ui.casesTable.cellWidget(row, self.CASE_VOLUME_COLUMN).currentNode()
            segmentationNode = self.ui.casesTable.cellWidget(row, self.CASE_SEGMENTATION_COLUMN).currentNode()
            with slicer.util.tryWithErrorDisplay(_("Could not read the annotation."), show=False):
                status = case_status(volumeNode, segmentationNode, classes)
                item = self.ui.casesTable.item(row, self.CASE_STATUS_COLUMN)
                item.setText(status)
                item.setToolTip(status)
        self.refreshPriorsTable([s for _v, s in pairs])

    # ------------------------------------------------------------------------------------------ priors table
    def refreshPriorsTable(self, segmentationNodes) -> None:
        from WeakSegSlicerLib.tables import prior_rows

        seen, unique = set(), []
        for node in segmentationNodes:
            if node.GetID() not in seen:
                seen.add(node.GetID())
                unique.append(node)
        self._priorRows = prior_rows(unique)
        table = self.ui.classesTable
        wasBlocked = table.blockSignals(True)
        try:
            table.setRowCount(len(self._priorRows))
            for row, prior in enumerate(self._priorRows):
                self._fillPriorRow(row, prior)
        finally:
            table.blockSignals(wasBlocked)

    def _fillPriorRow(self, row: int, prior) -> None:
        from WeakSegSlicerLib.tables import PRESENCE_CHOICES

        table = self.ui.classesTable
        readOnly = qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable
        nameItem = qt.QTableWidgetItem(prior.name)
        nameItem.setFlags(readOnly)
        nameItem.setData(qt.Qt.DecorationRole, qt.QColor(*prior.color))
        table.setItem(row, self.PRIOR_NAME, nameItem)
        caseItem = qt.QTableWidgetItem(prior.segmentation_node.GetName())
        caseItem.setFlags(readOnly)
        table.setItem(row, self.PRIOR_CASE, caseItem)
        sizeRange = prior.priors.size_range_ml
        minText = "" if sizeRange is None else f"{sizeRange[0]:g}"
        maxText = "" if sizeRange is None or sizeRange[1] == float("inf") else f"{sizeRange[1]:g}"
        for column, text in ((self.PRIOR_MIN, minText), (self.PRIOR_MAX, maxText)):
            item = qt.QTableWidgetItem(text)
            item.setToolTip(_("Size in mL; leave empty for no bound"))
            table.setItem(row, column, item)
        presence = qt.QComboBox()
        labels = {"not set": _("not set"), "present": _("present"), "absent": _("absent")}
        for choice in PRESENCE_CHOICES:
            presence.addItem(labels[choice], choice)
        current = "not set" if prior.priors.present is None else ("present" if prior.priors.present else "absent")
        presence.setCurrentIndex(presence.findData(current))
        presence.connect("currentIndexChanged(int)", lambda index, row=row: self.onPresenceChanged(row, index))
        table.setCellWidget(row, self.PRIOR_PRESENCE, presence)
        completeItem = qt.QTableWidgetItem("")
        completeItem.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsUserCheckable | qt.Qt.ItemIsSelectable)
        completeItem.setCheckState(qt.Qt.Checked if prior.priors.complete else qt.Qt.Unchecked)
        completeItem.setToolTip(_("Checked: this segment is the complete mask of its structure in this volume"))
        table.setItem(row, self.PRIOR_COMPLETE, completeItem)

    def _applyPrior(self, row: int, field: str, value) -> None:
        if row >= len(self._priorRows):
            return
        from WeakSegSlicerLib.tables import apply_prior_edit

        prior = self._priorRows[row]
        try:
            prior.priors = apply_prior_edit(prior.segmentation_node, prior.segment_id, field, value)
        except ValueError as exc:
            slicer.util.errorDisplay(_("Invalid prior for segment '{name}': {error}").format(name=prior.name,
                                                                                             error=exc))
        table = self.ui.classesTable
        wasBlocked = table.blockSignals(True)
        try:
            self._fillPriorRow(row, prior)
        finally:
            table.blockSignals(wasBlocked)

    def onPriorCellChanged(self, row: int, column: int) -> None:
        item = self.ui.classesTable.item(row, column)
        if item is None:
            return
        if column == self.PRIOR_MIN:
            self._applyPrior(row, "min_ml", item.text())
        elif column == self.PRIOR_MAX:
            self._applyPrior(row, "max_ml", item.text())
        elif column == self.PRIOR_COMPLETE:
            self._applyPrior(row, "complete", item.checkState() == qt.Qt.Checked)

    def onPresenceChanged(self, row: int, index: int) -> None:
        widget = self.ui.classesTable.cellWidget(row, self.PRIOR_PRESENCE)
        if widget is not None:
            self._applyPrior(row, "presence", widget.itemData(index))

    # ------------------------------------------------------------------------------------------ training
    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onModeChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.mode = self.modeComboBox.itemData(index) or "standard"

    def onTrain(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            pairs = self.casesFromTable()
            if not pairs:
                raise ValueError(_("Add at least one case: a volume and the segmentation you annotated on it."))
            if not self.logic.ensureDependencies():
                return
            parameterNode = self._parameterNode
            initModel = parameterNode.modelPath if parameterNode.startFromModel and parameterNode.modelPath else None
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Preparing the training job...")
            slicer.app.processEvents()
            self.logic.startTraining(pairs, minutes=parameterNode.minutes, device=parameterNode.device,
                                     mode=parameterNode.mode, initModel=initModel, onUpdate=self.onSessionUpdate,
                                     onFinished=self.onSessionFinished)
            self.setRunning(True)
            self.logic.showChart()

    def onSegment(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            volumeNode = self._parameterNode.segmentVolume
            if volumeNode is None:
                raise ValueError(_("Select the volume to segment."))
            if not self.logic.ensureDependencies():
                return
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Segmenting {name}...").format(name=volumeNode.GetName())
            self.logic.startSegmentation([volumeNode], device=self._parameterNode.device,
                                         onUpdate=self.onSessionUpdate, onFinished=self.onSessionFinished)
            self.setRunning(True)

    def onCancel(self) -> None:
        self.ui.statusLabel.text = _("Cancelling: the worker saves the last good model...")
        self.logic.cancel()

    def onSessionUpdate(self, session, messages) -> None:
        from WeakSegSlicerLib.charts import format_eta

        self.ui.progressBar.value = int(round(100 * min(max(session.fraction, 0.0), 1.0)))
        eta = format_eta(session.eta_s)
        text = session.message or _("Training...")
        self.ui.statusLabel.text = text + (("  " + _("ETA {eta}").format(eta=eta)) if eta else "")

    def onSessionFinished(self, session) -> None:
        self.setRunning(False)
        names = ", ".join(node.GetName() for node in session.result_nodes.values())
        if session.status == "completed":
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = _("Done. Created: {names}").format(names=names or _("nothing"))
        elif session.status == "cancelled":
            self.ui.statusLabel.text = _("Cancelled. Created: {names}").format(names=names or _("nothing"))
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


#
# WeakSegLogic
#


class WeakSegLogic(ScriptedLoadableModuleLogic):
    """Runs WeakSeg without the GUI (Python console, tests, the Segment Editor effect).

    Training and segmentation run in a background ``PythonSlicer`` process (WeakSegSlicerLib.sessions'
    TrainingSession / PredictionSession); a QTimer polls its JSON-lines progress.  Example::

        logic = slicer.util.getModuleLogic("WeakSeg")
        session = logic.train([(volumeNode, segmentationNode)], minutes=2)   # waits
        session.result_nodes    # case id -> "<volume> WeakSeg" segmentation node
    """

    POLL_INTERVAL_MS = 500

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = None
        self.onUpdate = None
        self.onFinished = None
        self.logCallback = None
        self.chartTableNode = None
        self.chartNode = None
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onTimer)

    def getParameterNode(self):
        return WeakSegParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------------------------------ environment
    @staticmethod
    def moduleDir() -> str:
        return os.path.dirname(os.path.abspath(__file__))

    def requirementsPath(self) -> str:
        return os.path.join(self.moduleDir(), "Resources", "requirements.txt")

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what the worker needs, on first use only, after asking. False if the user declines.

        PyTorch comes from the PyTorch extension (it picks the build for the GPU and driver); the
        other packages from Resources/requirements.txt with slicer.packaging.pip_ensure (Slicer >= 5.11)
        or slicer.util.pip_install.
        """
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(_("WeakSeg needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager "
                                 "and restart Slicer.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(askConfirmation=askConfirmation,
                                            torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
            if torch is None:
                return False
        try:
            import slicer.packaging as packaging
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            try:
                packaging.pip_ensure(packaging.load_requirements(self.requirementsPath()), requester="WeakSeg",
                                     prompt_install=askConfirmation)
            except RuntimeError:  # the user declined
                return False
            return True
        from WeakSegSlicerLib.dependencies import missing_requirements

        with open(self.requirementsPath()) as f:
            missing = missing_requirements(f.read().splitlines())
        if not missing:
            return True
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("WeakSeg needs these Python packages: {packages}.\nInstall them now? This may take a few minutes.")
                .format(packages=", ".join(missing)), windowTitle=_("WeakSeg")):
            return False
        slicer.util.pip_install(" ".join(f'"{requirement}"' if "<" in requirement or ">" in requirement
                                         else requirement for requirement in missing))
        return True

    def pythonExecutable(self) -> str:
        """PythonSlicer next to the application (as SlicerMONAIAuto3DSeg launches its processes)."""
        from WeakSegSlicerLib.process import find_python_executable

        return find_python_executable(slicer.app.applicationDirPath())

    def newJobDir(self, kind: str) -> str:
        base = os.path.join(slicer.app.temporaryPath, "WeakSeg")
        os.makedirs(base, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, n = os.path.join(base, f"{stamp}-{kind}"), 1
        while os.path.exists(path):
            n += 1
            path = os.path.join(base, f"{stamp}-{kind}-{n}")
        return path

    def gpuName(self):
        try:
            from WeakSegSlicerLib.gpu import describe_gpu

            return describe_gpu()
        except Exception:  # GPU detection must never break the module
            logging.debug("GPU detection failed", exc_info=True)
            return None

    def log(self, text: str) -> None:
        logging.info("WeakSeg: %s", text)
        if self.logCallback:
            self.logCallback(text)

    @staticmethod
    def learningModes() -> list:
        """(name, summary, paper) of every learning mode, for the mode selector."""
        try:
            from WeakSegLib.training.modes import describe_modes
        except ImportError:  # dependencies not installed yet: only the default is offered
            return [("standard", "Objective assembled from the annotations", "")]
        return [(m["name"], m.get("summary", ""), m.get("paper", "")) for m in describe_modes()]

    # ------------------------------------------------------------------------------------------ jobs
    def isRunning(self) -> bool:
        return self.session is not None and self.session.status == "running"

    def startTraining(self, cases, minutes=None, device: str = "auto", iterations=None, seed: int = 0,
                      initModel=None, predictVolumeNodes=None, loadResults: bool = True, onUpdate=None,
                      onFinished=None, mode: str = "standard", modeOptions: dict | None = None):
        """Start training on ``cases`` ((volume, segmentation) pairs or WeakSegLib.mrml.CaseNodes);
        returns the TrainingSession at once.  ``onUpdate(session, messages)`` and ``onFinished(session)``
        are called from the GUI thread.  The budget is what is given, with TrainConfig's one rule:
        ``minutes`` alone is a time limit, ``iterations`` alone exactly that many iterations (no time
        limit), both whichever comes first, neither TrainConfig's default."""
        from WeakSegSlicerLib.sessions import TrainingSession

        if self.isRunning():
            raise RuntimeError(_("A WeakSeg job is already running; cancel it first."))
        config = {"device": device or "auto", "seed": int(seed), "mode": mode or "standard",
                  "mode_options": dict(modeOptions or {})}
        if minutes is not None:
            config["minutes"] = float(minutes)
        if iterations:
            config["iterations"] = int(iterations)
        if initModel:
            config["init_model"] = str(initModel)
        session = TrainingSession(cases, config, predictVolumeNodes, job_dir=self.newJobDir("train"),
                                  python_executable=self.pythonExecutable(), load_results=loadResults)
        session.start()
        self.log(_("Training started in {path}").format(path=session.job_dir))
        self._begin(session, onUpdate, onFinished)
        return session

    def startSegmentation(self, volumeNodes, modelPath=None, device: str = "auto", onUpdate=None, onFinished=None):
        """Segment volumes with a model folder (default: the current model) in the background."""
        if self.isRunning():
            raise RuntimeError(_("A WeakSeg job is already running; cancel it first."))
        modelPath = modelPath or self.getParameterNode().modelPath
        if not modelPath:
            raise ValueError(_("There is no model yet: train one or load a saved model first."))
        from WeakSegSlicerLib.sessions import PredictionSession

        session = PredictionSession(modelPath, volumeNodes, device=device, job_dir=self.newJobDir("segment"),
                                    python_executable=self.pythonExecutable())
        session.start()
        self._begin(session, onUpdate, onFinished)
        return session

    def _begin(self, session, onUpdate, onFinished) -> None:
        self.session = session
        self.onUpdate = onUpdate
        self.onFinished = onFinished
        self.timer.start()

    def onTimer(self) -> None:
        """Poll the worker (never blocks); finish the session when its process has ended."""
        session = self.session
        if session is None or session.status != "running":
            self.timer.stop()
            return
        from WeakSegLib.jobs.protocol import describe_message

        messages = session.poll()
        for message in messages:
            text = describe_message(message)
            if text:
                self.log(text)
        if messages and getattr(session, "history", None):
            self.updateChart(session.history)
        if self.onUpdate:
            self.onUpdate(session, messages)
        if session.running:
            return
        self.timer.stop()
        try:
            session.finish(slicer.mrmlScene)
        except Exception as exc:  # results that cannot be loaded are a failure, reported in one line
            logging.exception("WeakSeg: loading the results failed")
            session.status = "failed"
            session.worker.last_error = str(exc)
        modelDir = getattr(session, "model_dir", None)
        if session.status in ("completed", "cancelled") and modelDir and hasattr(session, "prediction_files"):
            self.getParameterNode().modelPath = str(modelDir)
        if session.status == "failed":
            self.log(session.error_message)
        callback, self.onFinished = self.onFinished, None
        if callback:
            callback(session)

    def waitForCompletion(self, timeoutS=None):
        """Block (processing events) until the current job is done; cancel it after ``timeoutS``."""
        start = time.monotonic()
        while self.session is not None and self.session.status == "running":
            self.onTimer()
            if self.session.status != "running":
                break
            if timeoutS is not None and time.monotonic() - start > timeoutS:
                self.cancel(graceS=30.0)
                timeoutS = None
            slicer.app.processEvents()
            time.sleep(0.1)
        return self.session

    def train(self, cases, minutes=None, device: str = "auto", iterations=None, seed: int = 0,
              initModel=None, predictVolumeNodes=None, timeoutS=None):
        """Train and wait (scripts, tests); returns the finished TrainingSession.  Budget: see startTraining."""
        self.startTraining(cases, minutes, device, iterations, seed, initModel, predictVolumeNodes)
        return self.waitForCompletion(timeoutS)

    def segment(self, volumeNodes, modelPath=None, device: str = "auto", timeoutS=None):
        """Segment and wait (scripts, tests); returns the finished PredictionSession."""
        self.startSegmentation(volumeNodes, modelPath, device)
        return self.waitForCompletion(timeoutS)

    def cancel(self, graceS: float = 60.0) -> None:
        """Stop the running job: the worker saves the model of the last good state; killed after graceS."""
        if self.isRunning():
            self.session.cancel(graceS)
            self.log(_("Cancel requested."))

    def shutdown(self) -> None:
        """Kill a running worker now (application exit)."""
        self.timer.stop()
        if self.session is not None and self.session.worker is not None:
            self.session.worker.kill()

    # ------------------------------------------------------------------------------------------ curves, models
    def updateChart(self, history) -> None:
        from WeakSegSlicerLib.charts import ensure_progress_chart, update_progress_chart

        if self.chartNode is None or self.chartNode.GetScene() is None:
            self.chartTableNode, self.chartNode = ensure_progress_chart(slicer.mrmlScene)
        update_progress_chart(self.chartTableNode, self.chartNode, history)

    def showChart(self) -> bool:
        """Show the loss/constraint curves in the layout's plot view; False when there are none yet."""
        from WeakSegSlicerLib.charts import ensure_progress_chart

        if self.chartNode is None or self.chartNode.GetScene() is None:
            self.chartTableNode, self.chartNode = ensure_progress_chart(slicer.mrmlScene)
        slicer.modules.plots.logic().ShowChartInLayout(self.chartNode)
        return self.chartNode.GetNumberOfPlotSeriesNodes() > 0

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


#
# WeakSegTest
#


class WeakSegTest(ScriptedLoadableModuleTest):
    """Runs the Logic end to end: a synthetic volume with scribbles -> training in the worker process
    -> a segmentation node with Dice > 0.7.  Never disabled: it is the proof that the module works."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WeakSegMrmlBridge()
        self.setUp()
        self.test_WeakSegTrainAndSegment()

    def _makeAnnotatedPhantom(self):
        """Volume node + segmentation with scribbles + ground truth (z, y, x) + class names."""
        import numpy as np

        from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom
        from WeakSegLib.data.simulate import simulate_scribbles, simulate_size_ranges

        mrml = _mrml()
        case = make_phantom(seed=0, shape=(16, 48, 48))
        image, truth = case.image, case.ground_truth.array
        names = [c.name for c in PHANTOM_CLASSES]
        colors = [c.color for c in PHANTOM_CLASSES]
        scribbles = simulate_scribbles(case.ground_truth, len(names), seed=0).labels
        # Size ranges (true size +/- 20%), entered as segment priors like a user would.
        sizes = simulate_size_ranges(case.ground_truth, len(names), margin=0.2).size_ranges_ml
        volumeNode = mrml.volume_to_node(image, "WeakSegTestPhantom")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "WeakSegTestScribbles")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        for classId, (name, color) in enumerate(zip(names, colors)):
            segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", name, [c / 255.0 for c in color])
            mask = (scribbles == classId).astype(np.uint8)
            if mask.any():
                slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, volumeNode)
            if classId in sizes:
                mrml.set_segment_priors(segmentationNode, segmentId, size_range_ml=sizes[classId])
        return volumeNode, segmentationNode, truth, names

    def test_WeakSegMrmlBridge(self):
        """Nodes -> WeakAnnotation in the running application (fast)."""
        import numpy as np

        self.delayDisplay("Reading scribbles from a segmentation")
        mrml = _mrml()
        volumeNode, segmentationNode, truth, names = self._makeAnnotatedPhantom()
        annotation = mrml.annotation_from_nodes(segmentationNode, volumeNode)
        self.assertEqual(annotation.num_classes, len(names))
        for classId, (low, high) in annotation.size_ranges_ml.items():  # size priors came through segment tags
            size = np.sum(truth == classId) * annotation.geometry.voxel_volume_ml
            self.assertTrue(low <= size <= high)
        drawn = annotation.labels >= 0
        self.assertTrue(drawn.any())
        self.assertTrue(np.array_equal(annotation.labels[drawn], truth[drawn]))  # scribbles never contradict truth
        volume = mrml.volume_from_node(volumeNode)
        self.assertEqual(volume.array.shape, truth.shape)
        self.delayDisplay("Test passed")

    def test_WeakSegTrainAndSegment(self):
        import numpy as np

        mrml = _mrml()
        logic = WeakSegLogic()
        self.delayDisplay("Checking dependencies (PyTorch, MONAI)")
        self.assertTrue(logic.ensureDependencies(askConfirmation=False), "WeakSeg's dependencies are not installed")
        volumeNode, segmentationNode, truth, names = self._makeAnnotatedPhantom()

        self.delayDisplay("Training in the background worker")
        session = logic.train([(volumeNode, segmentationNode)], minutes=15, iterations=300, device="auto", seed=0,
                              timeoutS=1800)
        self.assertEqual(session.status, "completed", session.error_message)
        self.assertEqual(len(session.result_nodes), 1)
        resultNode = next(iter(session.result_nodes.values()))
        self.assertEqual(resultNode.GetName(), volumeNode.GetName() + " WeakSeg")
        self.assertTrue(session.history, "no progress was reported")
        self.assertTrue(logic.getParameterNode().modelPath)

        predicted = mrml.labels_from_segmentation_node(resultNode, volumeNode, session.classes).array
        foreground, truthForeground = predicted > 0, truth > 0
        dice = 2.0 * np.sum(foreground & truthForeground) / (np.sum(foreground) + np.sum(truthForeground))
        perClass = {names[c]: 2.0 * np.sum((predicted == c) & (truth == c)) / max(1, np.sum(predicted == c)
                                                                                  + np.sum(truth == c))
                    for c in range(1, len(names))}
        logging.info(f"WeakSegTest: foreground Dice {dice:.3f}, per class {perClass}")
        self.assertGreater(dice, 0.7)

        self.delayDisplay("Saving the model and segmenting with it")
        savedPath = logic.saveModel(logic.newJobDir("saved-model"))
        prediction = logic.segment([volumeNode], savedPath, device="auto", timeoutS=900)
        self.assertEqual(prediction.status, "completed", prediction.error_message)
        again = mrml.labels_from_segmentation_node(next(iter(prediction.result_nodes.values())), volumeNode,
                                                   session.classes).array
        self.assertGreater(np.mean(again == predicted), 0.95)
        self.delayDisplay("Test passed")

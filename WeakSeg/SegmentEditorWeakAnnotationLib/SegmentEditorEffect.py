"""Segment Editor effect "Weak annotation": the painted segments are scribbles; WeakSeg completes them.

An auto-complete effect like Slicer's "Grow from seeds": Initialize completes the strokes with the
WeakSeg module's current model when its classes match (a few seconds in the background:
WeakSegLib.inference.strokes), otherwise without a model (a classifier fit on the strokes and geodesic
competition, a few seconds: WeakSegLib.inference.geodesic); with boxes or points it trains WeakSeg's CNN
on the source volume. It previews the full segmentation; Apply writes the preview into the segments. The
options also add boxes (markups ROI) and points for a segment and edit its priors (size range in mL,
present / absent, complete mask), stored as segment tags; boxes and points are tied to their segment by
a node reference and the segment's ID (WeakSegLib.mrml.link_markups), so renaming a segment or importing
the scene keeps them. The effect only wires the UI: training runs through the WeakSeg module's one
shared Logic, so the module's "one job at a time" covers the effect too. A run is bound to the
segmentation and volume it started from: its preview is shown only on them.
"""

import logging
import os
import shutil
import tempfile

import qt
import slicer
import vtk
from SegmentEditorEffects.AbstractScriptedSegmentEditorAutoCompleteEffect import (
    AbstractScriptedSegmentEditorAutoCompleteEffect,
)
from slicer.i18n import tr as _

__all__ = ["SegmentEditorEffect"]

NOT_SET_SIZE = -1.0  # spin box value shown as "not set"


class SegmentEditorEffect(AbstractScriptedSegmentEditorAutoCompleteEffect):
    """Train on the painted scribbles (plus boxes, points, priors) and preview the full segmentation."""

    def __init__(self, scriptedEffect):
        AbstractScriptedSegmentEditorAutoCompleteEffect.__init__(self, scriptedEffect)
        scriptedEffect.name = "Weak annotation"  # not translated: modules find effects by name
        scriptedEffect.title = _("Weak annotation")
        self.minimumNumberOfSegments = 1
        self.minimumNumberOfSegmentsWithEditableArea = 1
        self.clippedMasterImageDataRequired = False
        self.clippedMaskImageDataRequired = False
        self.logic = None
        self.session = None
        self.discardResult = False
        self.predictedLabels = None
        self.predictedClasses = None
        self.predictedVolumeNode = None
        self.predictedSegmentationNode = None
        self.strokeCacheDir = None  # warm starts: the network's probabilities per volume, kept between Updates
        self._connections = []

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def cleanup(self):
        """Disconnect what this effect connected (a live Qt connection keeps the effect object alive)
        and stop receiving the running job's callbacks."""
        AbstractScriptedSegmentEditorAutoCompleteEffect.cleanup(self)
        for widget, signal, slot in self._connections:
            widget.disconnect(signal, slot)
        self._connections = []
        if self.session is not None:
            if self.logic is not None and self.logic.isRunning() and self.logic.session is self.session:
                self.logic.cancel(graceS=30.0, discard=True)  # only the effect's own job
            self.session = None
        if self.strokeCacheDir is not None:
            shutil.rmtree(self.strokeCacheDir, ignore_errors=True)
            self.strokeCacheDir = None

    def interactionNodeModified(self, interactionNode):
        """Stay active while the user places a box or points (Slicer's default deselects the effect when the
        interaction mode leaves view/transform)."""
        pass

    def _connect(self, widget, signal, slot):
        widget.connect(signal, slot)
        self._connections.append((widget, signal, slot))

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        if os.path.exists(iconPath):
            return qt.QIcon(iconPath)
        return qt.QIcon()

    def helpText(self):
        return "<html>" + _("""Complete a segmentation from weak annotations with a CNN (WeakSeg).<br>
<ul style="margin: 0">
<li>Paint a few strokes in each structure (one segment per structure) and in a segment named
<b>Background</b>; optionally add boxes or points for the selected segment and give its size range or
whether it is present.</li>
<li>Click <dfn>Initialize</dfn>. When the WeakSeg module's current model has the same segments, it
completes the strokes in a few seconds: the painted voxels are kept and the model is followed on the
slices where it agrees with them. Without such a model it completes them on their own, also in a few
seconds: a classifier learns the painted voxels' appearance and each voxel takes the segment of the
stroke it reaches across the weakest image changes (paint the Background too). With boxes or points,
WeakSeg trains for the chosen time in the background and previews the full segmentation.</li>
<li>Add strokes where the preview is wrong and click <dfn>Update</dfn>; click <dfn>Apply</dfn> to
keep the result.</li>
</ul><p>
Hidden segments are left out of the preview. Training, models and several volumes at once: WeakSeg module.
<p>""")

    # ------------------------------------------------------------------------------------------ options
    def setupOptionsFrame(self):
        AbstractScriptedSegmentEditorAutoCompleteEffect.setupOptionsFrame(self)

        self.minutesSpinBox = qt.QDoubleSpinBox()
        self.minutesSpinBox.setRange(0.1, 120.0)
        self.minutesSpinBox.setSingleStep(0.5)
        self.minutesSpinBox.setDecimals(1)
        self.minutesSpinBox.setSuffix(_(" min"))
        self.minutesSpinBox.setToolTip(_("Training time for each Initialize / Update with boxes or points"))
        self.scriptedEffect.addLabeledOptionsWidget(_("Training time:"), self.minutesSpinBox)

        self.largestComponentCheckBox = qt.QCheckBox(_("keep the largest piece of each segment"))
        self.largestComponentCheckBox.setToolTip(_("Remove the islands of each segment (the strokes are always "
                                                   "kept)"))
        self.scriptedEffect.addOptionsWidget(self.largestComponentCheckBox)

        self.insideLineEdit = qt.QLineEdit()
        self.insideLineEdit.setPlaceholderText(_("e.g. LV:Myo"))
        self.insideLineEdit.setToolTip(_("With a model: a segment that lies inside another, as INNER:OUTER segment "
                                         "names (several separated by commas). Of the inner segment's pieces the "
                                         "one the outer segment encloses is kept, not the largest"))
        self.scriptedEffect.addLabeledOptionsWidget(_("Inside:"), self.insideLineEdit)

        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 100)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.setWordWrap(True)
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.segmentComboBox = qt.QComboBox()
        self.segmentComboBox.setToolTip(_("Segment whose priors, boxes and points are edited below"))
        self.scriptedEffect.addLabeledOptionsWidget(_("Segment:"), self.segmentComboBox)

        self.minSizeSpinBox = self._newSizeSpinBox(_("Smallest plausible size of the structure in this volume"))
        self.maxSizeSpinBox = self._newSizeSpinBox(_("Largest plausible size of the structure in this volume"))
        sizeLayout = qt.QHBoxLayout()
        sizeLayout.addWidget(self.minSizeSpinBox)
        sizeLayout.addWidget(qt.QLabel(_("to")))
        sizeLayout.addWidget(self.maxSizeSpinBox)
        self.scriptedEffect.addLabeledOptionsWidget(_("Size range:"), sizeLayout)

        self.presenceComboBox = qt.QComboBox()
        for value, label in (("not set", _("not set")), ("present", _("present")), ("absent", _("absent"))):
            self.presenceComboBox.addItem(label, value)
        self.presenceComboBox.setToolTip(_("Whether the structure is in this volume at all"))
        self.completeCheckBox = qt.QCheckBox(_("complete mask"))
        self.completeCheckBox.setToolTip(_("This segment is the complete mask of its structure (not scribbles)"))
        presenceLayout = qt.QHBoxLayout()
        presenceLayout.addWidget(self.presenceComboBox)
        presenceLayout.addWidget(self.completeCheckBox)
        self.scriptedEffect.addLabeledOptionsWidget(_("Presence:"), presenceLayout)

        self.addBoxButton = qt.QPushButton(_("Add box"))
        self.addBoxButton.setToolTip(_("Draw a box (ROI) tight around the selected segment's structure"))
        self.addPointsButton = qt.QPushButton(_("Add points"))
        self.addPointsButton.setToolTip(_("Click points inside the selected segment's structure"))
        self.pointRadiusSpinBox = qt.QDoubleSpinBox()
        self.pointRadiusSpinBox.setRange(0.0, 50.0)
        self.pointRadiusSpinBox.setSuffix(_(" mm"))
        self.pointRadiusSpinBox.setToolTip(_("Radius of the ball labelled around each point (0: one voxel)"))
        markupsLayout = qt.QHBoxLayout()
        markupsLayout.addWidget(self.addBoxButton)
        markupsLayout.addWidget(self.addPointsButton)
        markupsLayout.addWidget(self.pointRadiusSpinBox)
        self.scriptedEffect.addLabeledOptionsWidget(_("Markups:"), markupsLayout)

        self._connect(self.minutesSpinBox, "valueChanged(double)", self.updateMRMLFromGUI)
        self._connect(self.pointRadiusSpinBox, "valueChanged(double)", self.updateMRMLFromGUI)
        self._connect(self.largestComponentCheckBox, "toggled(bool)", self.updateMRMLFromGUI)
        self._connect(self.insideLineEdit, "editingFinished()", self.updateMRMLFromGUI)
        self._connect(self.segmentComboBox, "currentIndexChanged(int)", self.onSelectedSegmentChanged)
        self._connect(self.minSizeSpinBox, "editingFinished()", self.onMinSizeEdited)
        self._connect(self.maxSizeSpinBox, "editingFinished()", self.onMaxSizeEdited)
        self._connect(self.presenceComboBox, "activated(int)", self.onPresenceEdited)
        self._connect(self.completeCheckBox, "clicked(bool)", self.onCompleteEdited)
        self._connect(self.addBoxButton, "clicked()", self.onAddBox)
        self._connect(self.addPointsButton, "clicked()", self.onAddPoints)

    @staticmethod
    def _newSizeSpinBox(toolTip):
        spinBox = qt.QDoubleSpinBox()
        spinBox.setRange(NOT_SET_SIZE, 1.0e6)
        spinBox.setDecimals(2)
        spinBox.setSuffix(_(" mL"))
        spinBox.setSpecialValueText(_("not set"))
        spinBox.setValue(NOT_SET_SIZE)
        spinBox.setToolTip(toolTip)
        return spinBox

    def setMRMLDefaults(self):
        # Not the base defaults: training takes minutes, so no automatic update on every stroke.
        self.scriptedEffect.setParameterDefault("AutoUpdate", "0")
        self.scriptedEffect.setParameterDefault("Minutes", 1.0)
        self.scriptedEffect.setParameterDefault("PointRadiusMm", 0.0)
        self.scriptedEffect.setParameterDefault("LargestComponent", 1)
        self.scriptedEffect.setParameterDefault("Inside", "")

    def updateGUIFromMRML(self):
        AbstractScriptedSegmentEditorAutoCompleteEffect.updateGUIFromMRML(self)
        for spinBox, name in ((self.minutesSpinBox, "Minutes"), (self.pointRadiusSpinBox, "PointRadiusMm")):
            if self.scriptedEffect.parameterDefined(name):
                wasBlocked = spinBox.blockSignals(True)
                spinBox.value = self.scriptedEffect.doubleParameter(name)
                spinBox.blockSignals(wasBlocked)
        if self.scriptedEffect.parameterDefined("LargestComponent"):
            wasBlocked = self.largestComponentCheckBox.blockSignals(True)
            self.largestComponentCheckBox.checked = self.scriptedEffect.integerParameter("LargestComponent") != 0
            self.largestComponentCheckBox.blockSignals(wasBlocked)
        if self.scriptedEffect.parameterDefined("Inside"):
            wasBlocked = self.insideLineEdit.blockSignals(True)
            self.insideLineEdit.text = self.scriptedEffect.parameter("Inside")
            self.insideLineEdit.blockSignals(wasBlocked)
        self._updateSegmentList()
        training = self.session is not None and self.session.status == "running"
        if training:
            self.previewButton.setEnabled(False)
            self.previewButton.text = _("Training...")
            self.cancelButton.setEnabled(True)

    def updateMRMLFromGUI(self):
        AbstractScriptedSegmentEditorAutoCompleteEffect.updateMRMLFromGUI(self)
        self.scriptedEffect.setParameter("Minutes", self.minutesSpinBox.value)
        self.scriptedEffect.setParameter("LargestComponent", 1 if self.largestComponentCheckBox.checked else 0)
        self.scriptedEffect.setParameter("Inside", self.insideLineEdit.text.strip())
        self.scriptedEffect.setParameter("PointRadiusMm", self.pointRadiusSpinBox.value)

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _mrml():
        from WeakSegLib import mrml

        return mrml

    def _segmentationNode(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        return parameterSetNode.GetSegmentationNode() if parameterSetNode else None

    def _updateSegmentList(self):
        segmentationNode = self._segmentationNode()
        current = self.segmentComboBox.currentData
        wasBlocked = self.segmentComboBox.blockSignals(True)
        self.segmentComboBox.clear()
        if segmentationNode is not None:
            segmentation = segmentationNode.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                segmentId = segmentation.GetNthSegmentID(index)
                self.segmentComboBox.addItem(segmentation.GetSegment(segmentId).GetName(), segmentId)
            found = self.segmentComboBox.findData(current) if current else -1
            self.segmentComboBox.setCurrentIndex(found if found >= 0 else 0)
        self.segmentComboBox.blockSignals(wasBlocked)
        self.onSelectedSegmentChanged()

    def _selectedSegment(self):
        segmentationNode = self._segmentationNode()
        segmentId = self.segmentComboBox.currentData
        if segmentationNode is None or not segmentId:
            raise ValueError(_("Select a segment first."))
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise ValueError(_("The selected segment no longer exists."))
        return segmentationNode, segmentId, segment

    def onSelectedSegmentChanged(self, index=None):
        widgets = (self.minSizeSpinBox, self.maxSizeSpinBox, self.presenceComboBox, self.completeCheckBox,
                   self.addBoxButton, self.addPointsButton)
        try:
            segmentationNode, segmentId, segment = self._selectedSegment()
            priors = self._mrml().get_segment_priors(segmentationNode, segmentId)
        except (ValueError, KeyError) as exc:
            for widget in widgets:
                widget.setEnabled(False)
            self.statusLabel.text = str(exc) if self.segmentComboBox.count else ""
            return
        for widget in widgets:
            widget.setEnabled(True)
        for widget in widgets[:4]:
            widget.blockSignals(True)
        low, high = priors.size_range_ml if priors.size_range_ml else (NOT_SET_SIZE, NOT_SET_SIZE)
        self.minSizeSpinBox.value = low if priors.size_range_ml else NOT_SET_SIZE
        self.maxSizeSpinBox.value = high if priors.size_range_ml and high != float("inf") else NOT_SET_SIZE
        presence = "not set" if priors.present is None else ("present" if priors.present else "absent")
        self.presenceComboBox.setCurrentIndex(self.presenceComboBox.findData(presence))
        self.completeCheckBox.checked = bool(priors.complete)
        for widget in widgets[:4]:
            widget.blockSignals(False)

    def _applyPrior(self, field, value):
        from WeakSegSlicerLib.tables import apply_prior_edit

        try:
            segmentationNode, segmentId, segment = self._selectedSegment()
            apply_prior_edit(segmentationNode, segmentId, field, value)
            self.statusLabel.text = ""
        except ValueError as exc:
            self.statusLabel.text = _("Invalid prior: {error}").format(error=exc)
        self.onSelectedSegmentChanged()

    def onMinSizeEdited(self):
        self.onSizeEdited("min_ml", self.minSizeSpinBox)

    def onMaxSizeEdited(self):
        self.onSizeEdited("max_ml", self.maxSizeSpinBox)

    def onSizeEdited(self, field, spinBox):
        value = spinBox.value
        self._applyPrior(field, "" if value <= NOT_SET_SIZE else f"{value}")

    def onPresenceEdited(self, index):
        self._applyPrior("presence", self.presenceComboBox.itemData(index))

    def onCompleteEdited(self, checked):
        self._applyPrior("complete", bool(checked))

    # ------------------------------------------------------------------------------------------ markups
    def _newMarkups(self, className, suffix):
        mrml = self._mrml()
        segmentationNode, segmentId, segment = self._selectedSegment()
        node = slicer.mrmlScene.AddNewNodeByClass(className, slicer.mrmlScene.GenerateUniqueName(
            f"{segment.GetName()} {suffix}"))
        mrml.link_markups(node, segmentationNode, segmentId)
        node.CreateDefaultDisplayNodes()
        if node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetSelectedColor(segment.GetColor())
        if segmentationNode.GetParentTransformNode() is not None:
            node.SetAndObserveTransformNodeID(segmentationNode.GetParentTransformNode().GetID())
        return node

    @staticmethod
    def _startPlacing(node, persistent):
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName(node.GetClassName())
        selectionNode.SetActivePlaceNodeID(node.GetID())
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetPlaceModePersistence(1 if persistent else 0)
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)

    def onAddBox(self):
        with slicer.util.tryWithErrorDisplay(_("Could not add a box.")):
            roi = self._newMarkups("vtkMRMLMarkupsROINode", _("box"))
            self._startPlacing(roi, persistent=False)
            self.statusLabel.text = _("Draw the box tight around the structure in a slice view.")

    def onAddPoints(self):
        with slicer.util.tryWithErrorDisplay(_("Could not add points.")):
            mrml = self._mrml()
            segmentationNode, segmentId, segment = self._selectedSegment()
            existing = mrml.markups_for_segment(segmentationNode, segmentId)
            pointList = existing[0] if existing else self._newMarkups("vtkMRMLMarkupsFiducialNode", _("points"))
            pointList.SetAttribute(mrml.ATTR_RADIUS_MM, f"{self.pointRadiusSpinBox.value:g}")
            self._startPlacing(pointList, persistent=True)
            self.statusLabel.text = _("Click inside the structure; right-click or Esc to stop.")

    # ------------------------------------------------------------------------------------------ training
    def onPreview(self):
        """Initialize / Update: train in the background; the preview is shown when it is done."""
        if self.session is not None and self.session.status == "running":
            return
        with slicer.util.tryWithErrorDisplay(_("Weak annotation could not start training."), waitCursor=True):
            self._startTraining()
        self.updateGUIFromMRML()

    def _startTraining(self):
        from WeakSegSlicerLib.models import compatible_model
        from WeakSegSlicerLib.sessions import stroke_cache_name

        import WeakSeg

        mrml = self._mrml()
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        volumeNode = parameterSetNode.GetSourceVolumeNode()
        if segmentationNode is None or volumeNode is None:
            raise ValueError(_("Select a segmentation and a source volume."))
        self.logic = WeakSeg.WeakSegLogic.shared()
        if self.logic.isRunning():
            raise RuntimeError(_("A WeakSeg job is already running (WeakSeg module); wait for it or cancel it."))
        if not self.logic.ensureDependencies():
            return
        rois, pointLists = mrml.markups_for_segmentation(segmentationNode)
        classes = mrml.classes_from_segmentation(segmentationNode)
        parameterNode = self.logic.getParameterNode()
        initModel = parameterNode.modelPath if compatible_model(parameterNode.modelPath, classes) else None
        self.discardResult = False
        self.progressBar.value = 0
        self.predictedVolumeNode = volumeNode
        self.predictedSegmentationNode = segmentationNode
        if initModel and not rois and not pointLists:
            # A trained model for these segments: complete the strokes with it (seconds, no training). The
            # strokes are kept and the model is followed only where it agrees with them. Each Update starts
            # from the last one (warm start): the network's probabilities of this volume are kept in a cache
            # file, and only the slices whose strokes changed are computed again.
            self.statusLabel.text = _("Completing the strokes with the current model...")
            if self.strokeCacheDir is None:
                self.strokeCacheDir = tempfile.mkdtemp(prefix="WeakSegStrokes-")
            cacheFile = os.path.join(self.strokeCacheDir, stroke_cache_name(volumeNode.GetID()))
            self.session = self.logic.startSegmentation(
                [volumeNode], modelPath=initModel, device=parameterNode.device, strokes=segmentationNode,
                loadResults=False, onUpdate=self.onTrainingUpdate, onFinished=self.onTrainingFinished,
                strokeCache=cacheFile, largestComponent=self.largestComponentCheckBox.checked,
                inside=[spec.strip() for spec in self.insideLineEdit.text.split(",") if spec.strip()])
            logging.info("Weak annotation: completing the strokes with %s", initModel)
            return
        if not rois and not pointLists:
            # No model for these segments: the strokes completed on their own (a classifier fit on the painted
            # voxels and geodesic competition between the strokes, a few seconds; no training).
            self.statusLabel.text = _("Completing the strokes (no model)...")
            self.session = self.logic.startSegmentation(
                [volumeNode], device=parameterNode.device, strokes=segmentationNode, loadResults=False,
                onUpdate=self.onTrainingUpdate, onFinished=self.onTrainingFinished, withoutModel=True,
                largestComponent=self.largestComponentCheckBox.checked)
            logging.info("Weak annotation: completing the strokes without a model")
            return
        self.statusLabel.text = _("Preparing...")
        self.session = self.logic.startTraining(
            [mrml.CaseNodes(volumeNode, segmentationNode, rois, pointLists)], minutes=self.minutesSpinBox.value,
            device=parameterNode.device, initModel=initModel, loadResults=False, onUpdate=self.onTrainingUpdate,
            onFinished=self.onTrainingFinished)
        if initModel:
            logging.info("Weak annotation: fine-tuning %s", initModel)

    def onTrainingUpdate(self, session, messages):
        from WeakSegSlicerLib.charts import format_eta

        if session is not self.session:
            return
        self.progressBar.value = int(round(100 * min(max(session.fraction, 0.0), 1.0)))
        eta = format_eta(session.eta_s)
        self.statusLabel.text = (session.message or _("Training...")) + (f"  ETA {eta}" if eta else "")

    def onTrainingFinished(self, session):
        from WeakSegSlicerLib.runner import run_target_current

        from WeakSegLib.data.volume import read_volume

        if session is not self.session:  # cleaned up meanwhile: nothing to show
            self.logic.runner.tidy(session)
            return
        self.session = None
        current = self.scriptedEffect.parameterSetNode()
        bound = run_target_current(self.predictedSegmentationNode, self.predictedVolumeNode,
                                   current.GetSegmentationNode() if current else None,
                                   current.GetSourceVolumeNode() if current else None)
        if session.status == "failed":
            self.statusLabel.text = session.error_message
            slicer.util.errorDisplay(session.error_message, windowTitle=_("Weak annotation"))
        elif self.discardResult or session.discarded or not session.prediction_files:
            self.statusLabel.text = _("Cancelled.")
        elif bound != "current":
            self.statusLabel.text = (_("The segmentation or volume this training started from was removed.")
                                     if bound == "gone" else
                                     _("Training finished for another segmentation or volume: select it again and "
                                       "click Initialize to see its result."))
        else:
            self.predictedLabels = read_volume(next(iter(session.prediction_files.values())))
            self.predictedClasses = session.classes
            self.progressBar.value = 100
            self.statusLabel.text = _("Preview ready: check it, add strokes and Update, or Apply.")
            # The base class builds the preview node and calls computePreviewLabelmap.
            AbstractScriptedSegmentEditorAutoCompleteEffect.onPreview(self)
        self.logic.runner.tidy(session)
        self.updateGUIFromMRML()

    def computePreviewLabelmap(self, mergedImage, outputLabelmap):
        """The preview on the whole source volume: the base class sizes ``mergedImage`` to the scribbles'
        region plus a margin of max(3, ratio x span) voxels, only 3 slices for scribbles on one slice."""
        if self.predictedLabels is None:
            raise RuntimeError(_("Click Initialize to train on this volume first."))
        mrml = self._mrml()
        segmentationNode = self._segmentationNode()
        segmentation = segmentationNode.GetSegmentation()
        names = [segmentation.GetSegment(self.selectedSegmentIds.GetValue(i)).GetName()
                 for i in range(self.selectedSegmentIds.GetNumberOfValues())]
        transform = mrml.transform_between(self.predictedVolumeNode, segmentationNode)
        sourceImage = self.scriptedEffect.sourceVolumeImageData()
        reference = mrml.whole_volume_geometry(sourceImage if sourceImage is not None else mergedImage)
        preview = mrml.preview_labelmap(self.predictedLabels, self.predictedClasses, names, reference, transform)
        outputLabelmap.DeepCopy(preview)
        imageToWorld = vtk.vtkMatrix4x4()
        reference.GetImageToWorldMatrix(imageToWorld)
        outputLabelmap.SetImageToWorldMatrix(imageToWorld)

    def onCancel(self):
        if self.session is not None and self.session.status == "running":
            self.discardResult = True
            self.logic.cancel(graceS=10.0, discard=True)
            self.statusLabel.text = _("Cancelling...")
            return
        AbstractScriptedSegmentEditorAutoCompleteEffect.onCancel(self)

    def onApply(self):
        AbstractScriptedSegmentEditorAutoCompleteEffect.onApply(self)
        self.predictedLabels = None
        self.statusLabel.text = ""

"""The Qt wiring of the module panel's tables and selectors: the cases (volume + annotation
segmentation, status), the per-segment priors (size range, presence, complete mask), the device and
the learning mode.  What the tables show and how an edit is stored is in
:mod:`WeakSegSlicerLib.tables` (no Qt, tested); ``ModulePanel`` only fills and reads the
widgets for ``WeakSegWidget``.  The learning-mode list is filled when it is first opened: reading the modes imports
torch, which must neither happen nor fail when the module opens.
"""

import logging

import qt
import slicer
from slicer.i18n import tr as _


class ModulePanel:
    """Tables and selectors of WeakSegWidget.  Reads and writes the widget's attributes (``ui``, ``logic``,
    ``_parameterNode``, ``_updatingGui``, ...) as its own, so the methods read like the widget's."""

    CASE_VOLUME_COLUMN, CASE_SEGMENTATION_COLUMN, CASE_STATUS_COLUMN = 0, 1, 2
    PRIOR_NAME, PRIOR_CASE, PRIOR_MIN, PRIOR_MAX, PRIOR_PRESENCE, PRIOR_COMPLETE = range(6)

    def __init__(self, widget) -> None:
        object.__setattr__(self, "_widget", widget)

    def __getattr__(self, name):
        return getattr(self._widget, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._widget, name, value)

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
        from WeakSegLib.mrml import classes_from_segmentations
        from WeakSegSlicerLib.tables import case_status

        pairs = self.casesFromTable()
        classes = classes_from_segmentations(s for _v, s in pairs) if pairs else None
        for row in range(self.ui.casesTable.rowCount):
            volumeNode = self.ui.casesTable.cellWidget(row, self.CASE_VOLUME_COLUMN).currentNode()
            segmentationNode = self.ui.casesTable.cellWidget(row, self.CASE_SEGMENTATION_COLUMN).currentNode()
            try:  # one unreadable row must not stop the others (tryWithErrorDisplay re-raises)
                status = case_status(volumeNode, segmentationNode, classes)
            except Exception as exc:
                logging.exception("WeakSeg: could not read the annotation of row %d", row + 1)
                status = _("Error: {error}").format(error=exc)
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

    # ------------------------------------------------------------------------------------------ selectors
    @staticmethod
    def gpuName():
        """The GPU's name for the device selector, or None (detection never breaks the module)."""
        try:
            from WeakSegSlicerLib.gpu import describe_gpu

            return describe_gpu()
        except Exception:
            logging.debug("GPU detection failed", exc_info=True)
            return None

    @staticmethod
    def learningModes() -> list:
        """(name, summary, paper) of every learning mode.  Reading them imports the training code (torch): a
        missing or broken install offers only the default."""
        try:
            from WeakSegLib.training.modes import describe_modes

            return [(m["name"], m.get("summary", ""), m.get("paper", "")) for m in describe_modes()]
        except Exception as exc:  # ImportError, or OSError from a broken CUDA build of torch
            logging.warning("WeakSeg: learning modes unavailable (%s); only 'standard' is offered.", exc)
            return [("standard", "Objective assembled from the annotations", "")]

    def setupSelectors(self) -> None:
        self.ui.deviceComboBox.addItem(_("Auto"), "auto")
        self.ui.deviceComboBox.addItem(_("CPU"), "cpu")
        gpuName = self.gpuName()
        self.ui.deviceComboBox.addItem(_("GPU: {name}").format(name=gpuName) if gpuName else _("GPU (none detected)"),
                                       "cuda")
        model = self.ui.deviceComboBox.model()
        if not gpuName and hasattr(model, "item"):
            model.item(2).setEnabled(False)

        # Learning mode, next to the device selector, filled when first opened.
        class LazyComboBox(qt.QComboBox):
            def __init__(self, fill):
                qt.QComboBox.__init__(self)
                self._fill = fill

            def showPopup(self):
                if self._fill is not None:
                    fill, self._fill = self._fill, None
                    fill(self)
                qt.QComboBox.showPopup(self)

        self.modeComboBox = LazyComboBox(self.fillLearningModes)
        self.modeComboBox.addItem("standard", "standard")
        self.modeComboBox.toolTip = _(
            "How WeakSeg learns beyond the annotations' own terms (see docs/learning-modes.md).")
        deviceLayout = self.ui.deviceComboBox.parentWidget().layout()
        if hasattr(deviceLayout, "addRow"):
            deviceLayout.addRow(_("Learning mode:"), self.modeComboBox)
        else:
            deviceLayout.addWidget(self.modeComboBox)

    def fillLearningModes(self, comboBox) -> None:
        current = comboBox.currentData or "standard"
        wasBlocked = comboBox.blockSignals(True)
        comboBox.clear()
        for name, summary, paper in self.learningModes():
            comboBox.addItem(name, name)
            comboBox.setItemData(comboBox.count - 1, f"{summary}\n{paper}", qt.Qt.ToolTipRole)
        if comboBox.findData(current) < 0:
            comboBox.addItem(current, current)
        comboBox.setCurrentIndex(comboBox.findData(current))
        comboBox.blockSignals(wasBlocked)

    def updateSelectors(self) -> None:
        """Show the parameter node's learning mode and device."""
        modeIndex = self.modeComboBox.findData(self._parameterNode.mode)
        if modeIndex < 0:  # the list is not filled yet
            self.modeComboBox.addItem(self._parameterNode.mode, self._parameterNode.mode)
            modeIndex = self.modeComboBox.findData(self._parameterNode.mode)
        if modeIndex != self.modeComboBox.currentIndex:
            wasBlocked = self.modeComboBox.blockSignals(True)
            self.modeComboBox.currentIndex = modeIndex
            self.modeComboBox.blockSignals(wasBlocked)
        index = self.ui.deviceComboBox.findData(self._parameterNode.device)
        if index >= 0 and index != self.ui.deviceComboBox.currentIndex:
            wasBlocked = self.ui.deviceComboBox.blockSignals(True)
            self.ui.deviceComboBox.currentIndex = index
            self.ui.deviceComboBox.blockSignals(wasBlocked)

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onModeChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.mode = self.modeComboBox.itemData(index) or "standard"

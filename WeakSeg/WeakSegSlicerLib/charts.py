"""The live loss curves of a training: progress messages -> a table node and a plot chart node.

The table, chart and series nodes are working nodes: hidden from the node selectors and the Data
module, not saved with the scene, reused by every training and removed by
:func:`remove_progress_chart` (scene close, application exit).  Showing the chart (which changes the
view layout) is left to the user's click.

``format_eta`` (the ETA text next to the progress bar) is the protocol's duration formatter,
re-exported here for the GUI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import vtk

from WeakSegLib.data.dataset import DEFAULT_COLORS
from WeakSegLib.jobs.protocol import format_eta
from WeakSegLib.mrml.nodes import _scene_for

__all__ = ["ensure_progress_chart", "format_eta", "progress_history_columns", "remove_progress_chart",
           "update_progress_chart"]

CHART_NAME = "WeakSeg training"


def _working_node(node):
    node.SetHideFromEditors(True)
    node.SetSaveWithScene(False)
    return node


def progress_history_columns(history: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Progress messages -> columns ``iteration``, ``loss: <term>``, ``violation: <term>`` (NaN where a
    message lacks a term)."""
    rows = [m for m in history if m.get("iteration") is not None]
    names_loss = sorted({k for m in rows for k in (m.get("losses") or {})})
    names_viol = sorted({k for m in rows for k in (m.get("violations") or {})})
    columns = {"iteration": np.array([float(m["iteration"]) for m in rows], dtype=float)}
    for key, names, prefix in (("losses", names_loss, "loss"), ("violations", names_viol, "violation")):
        for name in names:
            columns[f"{prefix}: {name}"] = np.array([float((m.get(key) or {}).get(name, np.nan)) for m in rows],
                                                    dtype=float)
    return columns


def ensure_progress_chart(scene=None, name: str = CHART_NAME):
    """A table node and a plot chart node for the live loss/constraint curves (created once, reused;
    hidden working nodes, not saved with the scene)."""
    scene = _scene_for(scene)
    table = scene.GetFirstNodeByName(f"{name} table")
    if table is None or not table.IsA("vtkMRMLTableNode"):
        table = _working_node(scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table"))
    chart = scene.GetFirstNodeByName(f"{name} chart")
    if chart is None or not chart.IsA("vtkMRMLPlotChartNode"):
        chart = _working_node(scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart"))
        chart.SetTitle(name)
        chart.SetXAxisTitle("iteration")
        chart.SetYAxisTitle("loss / constraint violation")
    return table, chart


def remove_progress_chart(scene=None, name: str = CHART_NAME) -> int:
    """Remove the chart, its table and its series from the scene; returns how many nodes were removed."""
    scene = _scene_for(scene)
    removed = 0
    chart = scene.GetFirstNodeByName(f"{name} chart")
    nodes = []
    if chart is not None and chart.IsA("vtkMRMLPlotChartNode"):
        nodes += [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())] + [chart]
    table = scene.GetFirstNodeByName(f"{name} table")
    if table is not None and table.IsA("vtkMRMLTableNode"):
        nodes.append(table)
    for node in nodes:
        if node is not None and scene.IsNodePresent(node):
            scene.RemoveNode(node)
            removed += 1
    return removed


def update_progress_chart(table_node, chart_node, history: Sequence[Mapping]) -> None:
    """Refill the table from the progress messages and give the chart one series per column."""
    columns = progress_history_columns(history)
    table = table_node.GetTable()
    table.Initialize()
    for column_name, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(column_name)
        array.SetNumberOfTuples(len(values))
        for i, v in enumerate(values):
            array.SetValue(i, v)
        table.AddColumn(array)
    table_node.Modified()
    scene = chart_node.GetScene()
    wanted = [c for c in columns if c != "iteration"]
    existing = {}
    for i in range(chart_node.GetNumberOfPlotSeriesNodes()):
        series = chart_node.GetNthPlotSeriesNode(i)
        if series is not None:
            existing[series.GetYColumnName()] = series
    for index, column_name in enumerate(wanted):
        if column_name in existing:
            continue
        series = _working_node(scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode",
                                                        f"{chart_node.GetName()} {column_name}"))
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("iteration")
        series.SetYColumnName(column_name)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        color = DEFAULT_COLORS[1 + index % (len(DEFAULT_COLORS) - 1)]
        series.SetColor(*(c / 255.0 for c in color))
        if column_name.startswith("violation"):
            series.SetLineStyle(series.LineStyleDash)
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())


"""WeakSegSlicerLib.charts: the loss-curve table and chart nodes, the ETA text."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import scene_removing_added_nodes
from WeakSegSlicerLib import charts


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


# ----------------------------------------------------------------------------------------------- progress chart
def test_progress_chart_nodes(scene):
    history = [{"type": "progress", "iteration": i, "losses": {"pce": 1.0 / (i + 1), "size": 0.1},
                "violations": {"size": 0.5 / (i + 1)}} for i in range(5)]
    history.append({"type": "progress", "iteration": 5, "losses": {"pce": 0.1}})  # a term missing: NaN
    table, chart = charts.ensure_progress_chart(scene)
    assert charts.ensure_progress_chart(scene) == (table, chart)  # reused
    charts.update_progress_chart(table, chart, history)
    charts.update_progress_chart(table, chart, history)  # no duplicate series
    assert table.GetNumberOfColumns() == 4
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    columns = charts.progress_history_columns(history)
    assert list(columns) == ["iteration", "loss: pce", "loss: size", "violation: size"]
    assert np.isnan(columns["loss: size"][-1])
    assert charts.format_eta(75.2) == "1 min 15 s" and charts.format_eta(5) == "5 s" and charts.format_eta(None) == ""
    assert charts.format_eta(3 * 3600 + 120) == "3 h 02 min"


def test_chart_nodes_are_hidden_unsaved_and_removable(scene):
    """Training leaves nothing in the saved scene: hidden working nodes, removed on demand."""
    table, chart = charts.ensure_progress_chart(scene)
    charts.update_progress_chart(table, chart, [{"iteration": 1, "losses": {"pce": 1.0}, "violations": {"size": 0.1}}])
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert len(series) == 2
    for node in (table, chart, *series):
        assert node.GetHideFromEditors() and not node.GetSaveWithScene()
    assert charts.remove_progress_chart(scene) == 4
    for node in (table, chart, *series):
        assert not scene.IsNodePresent(node)
    assert charts.remove_progress_chart(scene) == 0

"""benchmarks/modes_comparison.py: its settings name real methods and modes, and it merges bench runs into one table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from WeakSegLib.bench import ANNOTATIONS, METHODS
from WeakSegLib.cli import build_parser
from WeakSegLib.cli.bench import config_from_args
from WeakSegLib.config import TrainConfig
from WeakSegLib.training.modes import MODES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mc():
    spec = importlib.util.spec_from_file_location("modes_comparison", ROOT / "benchmarks" / "modes_comparison.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["modes_comparison"] = module
    spec.loader.exec_module(module)
    return module


def test_every_setting_names_known_methods_modes_and_annotations(mc):
    for setting, (base, runs) in mc.SETTINGS.items():
        annotation = base[base.index("--annotation") + 1]
        assert annotation in ANNOTATIONS, setting
        names = [r[0] for r in runs]
        assert len(names) == len(set(names)), f"{setting}: duplicate run names"
        for name, method, mode, label, *own in runs:
            assert method in METHODS, (setting, name)
            assert mode in MODES, (setting, name)
            assert label
            for option in own:  # per-run options: valid bench options; a --config names a shipped, valid file
                if "--config" in option:
                    config = Path(option[option.index("--config") + 1])
                    assert config.is_file(), config
                    TrainConfig.from_dict({**json.loads(config.read_text()), "iterations": 1})
                args = build_parser().parse_args(["bench", *base, "--iterations", "1", "--methods", method,
                                                  "--mode", mode, "--out", "unused", *option])
                config_from_args(args)     # raises on an option the bench refuses
    semi = [r[2] for r in mc.SETTINGS["la-semi"][1] if r[1] == "weakseg" and r[2] != "standard"]
    assert set(semi) == set(mc.SEMI_MODES)


def _bench_json(folder: Path, method: str, dice: float, status: str = "completed") -> None:
    folder.mkdir(parents=True)
    curve = [] if method == "growcut" else [{"seconds": 180.0, "mean_dice": dice - 0.1},
                                            {"seconds": 360.0, "mean_dice": dice}]
    report = {"environment": {"device": "CPU (1 threads)"},
              "methods": {method: {"status": status, "mean_dice": dice, "dice_per_class": {"LA": dice},
                                   "summary": {"classes": {"LA": {"hd95_mm": {"mean": 5.0}}}},
                                   "train_seconds": 360.0, "train_iterations": 250, "curve": curve}}}
    (folder / "bench.json").write_text(json.dumps(report))


def test_finished_runs_are_reused_and_merged_with_deltas_against_the_baseline(mc, tmp_path):
    # Folders that already hold a bench.json are read, not re-run: no training happens in this test.
    _bench_json(tmp_path / "boxes", "weakseg", 0.80)
    _bench_json(tmp_path / "box-rounds", "weakseg", 0.85)
    _bench_json(tmp_path / "growcut", "growcut", 0.70)
    rows = mc.run("la-boxes", tmp_path, ["--iterations", "1"], "cpu", 0, None, [])
    assert [r["run"] for r in rows] == ["boxes", "box-rounds", "growcut"]
    assert rows[1]["mean_dice"] == pytest.approx(0.85) and rows[1]["hd95"] == pytest.approx(5.0)
    text = mc.write_table("la-boxes", rows, tmp_path, "cmd")
    assert "0.850 (+0.050)" in text and "0.700 (-0.100)" in text
    assert "| boxes (emptiness + tightness) | 0.800 |" in text
    saved = json.loads((tmp_path / "modes.json").read_text())
    assert saved["setting"] == "la-boxes" and len(saved["rows"]) == 3
    assert (tmp_path / "modes.md").read_text() == text
    assert rows[0]["curve"] == [(180.0, pytest.approx(0.70)), (360.0, 0.80)] and rows[2]["curve"] == []
    assert mc.write_plot("la-boxes", rows, tmp_path).stat().st_size > 0


def test_only_restricts_the_runs(mc, tmp_path):
    _bench_json(tmp_path / "boxes", "weakseg", 0.80)
    rows = mc.run("la-boxes", tmp_path, ["--iterations", "1"], "cpu", 0, {"boxes"}, [])
    assert [r["run"] for r in rows] == ["boxes"]


def test_budget_must_be_given_once(mc, tmp_path):
    with pytest.raises(SystemExit):
        mc.main(["--setting", "la-boxes", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        mc.main(["--setting", "la-boxes", "--out", str(tmp_path), "--minutes", "1", "--iterations", "5"])

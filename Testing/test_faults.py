"""Bad input and faults, each run for real: real files, the ``weakseg`` command as a subprocess, real kills.

Every row of :data:`ROWS` prepares a copy of a small workspace (:func:`fault_cases.build_base`), runs one
command and expects either one error line (no traceback, naming the problem, exit code 1 or 2) or a clean
success; in both cases no file that existed before changed (SHA-256 of every file before and after), except
the outputs a successful row was asked to replace.  The tests after the table kill trainings and writers
mid-run and check that the model folder is always consistent and a run resumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_cases import (
    ENV,
    SAVER,
    SHAPE,
    TRAIN,
    BlowUp,
    Result,
    RunsCode,
    build_base,
    checksums,
    edit_json,
    set_nifti_spacing,
    start_training,
    truncate,
    uncompressed_copy,
    wait_for,
    weakseg,
    write_config,
    write_image,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault_base")
    build_base(folder)
    return folder


@pytest.fixture
def ws(base, tmp_path) -> Path:
    work = tmp_path / "ws"
    shutil.copytree(base, work)
    return work


# ------------------------------------------------------------------------------------------ the table
@dataclass
class Row:
    name: str
    prepare: Callable[[Path], list]          # edits the workspace, returns the command's arguments
    expect: str | None                       # regex of the one error line; None = success
    code: int = 1
    replaced: set[str] = field(default_factory=set)   # files a successful row may change
    warning: str | None = None               # regex a WARNING line must match (success rows)
    check: Callable[[Path, Result], None] | None = None


ROWS: list[Row] = []


def row(expect: str | None, code: int = 1, replaced=(), warning: str | None = None, check=None):
    def register(prepare):
        ROWS.append(Row(prepare.__name__, prepare, expect, code, set(replaced), warning, check))
        return prepare
    return register


PREDICT = ["predict", "--model", "model", "--device", "cpu"]
TRAIN_DS = ["train", "--dataset", "ds", "--out", "new_model", *TRAIN]


# -- nothing the user owns is overwritten without --overwrite; every output path is checked before any work
@row(r"--out 'out.nii.gz' exists; pass --overwrite")
def predict_out_exists(ws):
    shutil.copyfile(ws / "gt.nii.gz", ws / "out.nii.gz")
    return [*PREDICT, "--image", "img.nii.gz", "--out", "out.nii.gz"]


@row(r"--probabilities 'gt.nii.gz' exists")
def predict_probabilities_exist(ws):
    return [*PREDICT, "--image", "img.nii.gz", "--out", "new.nii.gz", "--probabilities", "gt.nii.gz"]


@row(r"--out 'img.nii.gz' is an input of this command")
def predict_out_is_its_input_even_with_overwrite(ws):
    return [*PREDICT, "--image", "img.nii.gz", "--out", "img.nii.gz", "--overwrite"]


@row(r"Two --image files are named 'img.nii.gz'")
def predict_images_with_one_name_in_two_folders(ws):
    for sub in ("a", "b"):
        (ws / sub).mkdir()
        shutil.copyfile(ws / "img.nii.gz", ws / sub / "img.nii.gz")
    return [*PREDICT, "--image", "a/img.nii.gz", "b/img.nii.gz", "--out", "preds"]


@row(r"Several --image files need --out to be a folder")
def predict_several_images_into_one_file(ws):
    return [*PREDICT, "--image", "img.nii.gz", "ds/phantom_001.nii.gz", "--out", "x.nii.gz"]


@row(r"are both written to 'x.nii.gz'")
def predict_labels_and_probabilities_on_one_file(ws):
    return [*PREDICT, "--image", "img.nii.gz", "--out", "x.nii.gz", "--probabilities", "x.nii.gz"]


@row(None, replaced={"out.nii.gz"})
def predict_overwrite_replaces_its_output(ws):
    shutil.copyfile(ws / "img.nii.gz", ws / "out.nii.gz")
    return [*PREDICT, "--image", "img.nii.gz", "--out", "out.nii.gz", "--overwrite"]


@row(r"--out 'gt.nii.gz' is an input of this command")
def simulate_out_onto_its_ground_truth(ws):
    return ["simulate", "--gt", "gt.nii.gz", "--out", "gt.nii.gz", "--overwrite"]


@row(r"--out 'ds/phantom_000_scribbles.nii.gz' exists")
def simulate_out_exists(ws):
    return ["simulate", "--gt", "gt.nii.gz", "--out", "ds/phantom_000_scribbles.nii.gz"]


@row(r"the sidecar \(next to --out\) 'new_boxes.json' exists")
def simulate_default_sidecar_exists(ws):
    (ws / "new_boxes.json").write_text('{"my": "notes"}')
    return ["simulate", "--gt", "gt.nii.gz", "--kind", "boxes", "--out", "new_boxes.nii.gz"]


@row(r"--phantom 'ds' exists; pass --overwrite")
def simulate_phantom_into_a_hand_made_dataset(ws):
    return ["simulate", "--phantom", "ds", "--cases", "1"]


@row(r"--json 'ds/dataset.json' exists")
def evaluate_json_exists(ws):
    return ["evaluate", "--pred", "gt.nii.gz", "--gt", "gt.nii.gz", "--json", "ds/dataset.json"]


@row(r"--json 'gt.nii.gz' is an input")
def evaluate_json_onto_its_input(ws):
    return ["evaluate", "--pred", "gt.nii.gz", "--gt", "gt.nii.gz", "--json", "gt.nii.gz", "--overwrite"]


@row(r"holds files that are not part of a WeakSeg model \(dataset.json")
def train_overwrite_onto_a_dataset_folder(ws):
    return ["train", "--dataset", "ds", "--out", "ds", "--overwrite", *TRAIN]


@row(r"Output folder 'model' exists and is not empty. Pass --overwrite")
def train_onto_an_existing_model(ws):
    return ["train", "--dataset", "ds", "--out", "model", *TRAIN]


@row(r"--overwrite starts a new run and --resume continues")
def train_with_overwrite_and_resume(ws):
    return ["train", "--dataset", "ds", "--out", "model", "--overwrite", "--resume", *TRAIN]


@row(r"holds files the demo did not write \(dataset.json")
def demo_overwrite_onto_a_foreign_folder(ws):
    return ["demo", "--out", "ds", "--overwrite", "--iterations", "1", "--progress", "none"]


@row(r"--resume: 'new_model' holds no model or checkpoint")
def train_resume_without_a_checkpoint(ws):
    return [*TRAIN_DS, "--resume"]


# -- write permission and impossible paths are found before any work
@row(r"'.*img.nii.gz' is a file")
def train_out_below_a_file(ws):
    return ["train", "--dataset", "ds", "--out", "img.nii.gz/model", *TRAIN]


@row(r"'/proc' is not writable")
def train_out_in_an_unwritable_folder(ws):
    return ["train", "--dataset", "ds", "--out", "/proc/weakseg_model", *TRAIN]


@row(r"cannot be created: 'img.nii.gz' is a file")
def predict_out_below_a_file(ws):
    return [*PREDICT, "--image", "img.nii.gz", "--out", "img.nii.gz/seg.nii.gz"]


@row(r"Cannot write --json '/proc/report.json': '/proc' is not writable")
def evaluate_json_unwritable(ws):
    return ["evaluate", "--pred", "gt.nii.gz", "--gt", "gt.nii.gz", "--json", "/proc/report.json"]


# -- model folders: checked at load time, model files cannot run code
@row(r"Model description '.*model.json' is corrupted \(invalid JSON")
def model_json_corrupted(ws):
    (ws / "model" / "model.json").write_text('{"format_version": 1, "classes": [')
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


@row(r"model.json': 'classes' must be a list, got the string \"x\"")
def model_json_classes_of_the_wrong_type(ws):
    edit_json(ws / "model" / "model.json", lambda d: d.update(classes="x"))
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


@row(r"lists 4 classes but its plan has 7 outputs")
def model_json_plan_disagrees_with_classes(ws):
    edit_json(ws / "model" / "model.json", lambda d: d["plan"].update(num_classes=7))
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


@row(r"weights.pt' is not the file '.*model.json' describes \(its SHA-256 differs\)")
def weights_of_another_model(ws):
    shutil.copyfile(ws / "model5" / "weights.pt", ws / "model" / "weights.pt")
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


@row(r"do not belong to its model.json \(the weights have 5 output classes, model.json lists 4\)")
def weights_of_another_model_without_digest(ws):
    shutil.copyfile(ws / "model5" / "weights.pt", ws / "model" / "weights.pt")
    edit_json(ws / "model" / "model.json", lambda d: d.pop("weights_sha256"))
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


def _no_code_ran(ws: Path, result: Result) -> None:
    assert not (ws / "pwned").exists()


@row(r"Could not load weights from '.*weights.pt' \(a model file may hold only tensors", check=_no_code_ran)
def weights_that_would_run_code(ws):
    torch.save({"w": RunsCode(str(ws / "pwned"))}, ws / "model" / "weights.pt")
    edit_json(ws / "model" / "model.json", lambda d: d.pop("weights_sha256"))
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


@row(r"Model '.*model' has no weights.pt")
def weights_missing(ws):
    (ws / "model" / "weights.pt").unlink()
    return [*PREDICT, "--image", "img.nii.gz", "--out", "seg.nii.gz"]


@row(r"image 'two.nii.gz' has 2 channel\(s\) but the model was trained on 1")
def predict_image_with_other_channels(ws):
    from WeakSegLib.data.volume import read_volume

    image = read_volume(ws / "img.nii.gz").array
    write_image(ws / "two.nii.gz", np.stack([image, image], -1))
    return [*PREDICT, "--image", "two.nii.gz", "--out", "seg.nii.gz"]


# -- every value from a file is type-checked: which file, which key, what was expected
def _config_row(options, expect):
    def prepare(ws):
        write_config(ws / "c.json", options)
        return [*TRAIN_DS, "--config", "c.json"]
    return expect, prepare


for _name, _options, _expect in (
        ("config_iterations_as_string", {"iterations": "20"},
         r"Config file 'c.json': 'iterations' must be an integer, got the string \"20\""),
        ("config_patch_size_as_number", {"patch_size": 64},
         r"'patch_size' must be a list of integers, got the number 64"),
        ("config_weights_as_number", {"weights": 5}, r"'weights' must be an object of loss weights"),
        ("config_batch_size_zero", {"batch_size": 0}, r"Config file 'c.json': batch_size must be >= 1, got 0"),
        ("config_patch_size_too_small", {"patch_size": [1, 1]}, r"patch_size must be 2 .* got \[1, 1\]"),
        ("config_invalid_json", '{"iterations": 3,}', r"Config file 'c.json' is corrupted \(invalid JSON at line 1"),
        ("config_unknown_key", {"iteration": 3}, r"Unknown training option 'iteration' \(did you mean iterations"),
        ("config_minutes_nan", '{"minutes": NaN}', r"'minutes' must be a finite number, got the number nan"),
        ("config_a_list", "[1, 2]", r"Config file 'c.json' must hold a JSON object"),
):
    _expect_re, _prepare = _config_row(_options, _expect)
    _prepare.__name__ = _name
    row(_expect_re)(_prepare)


@row(r"dataset.json': 'cases' must be a list of case objects, got the string \"x\"")
def dataset_cases_as_string(ws):
    edit_json(ws / "ds" / "dataset.json", lambda d: d.update(cases="x"))
    return TRAIN_DS


@row(r"cases\[1\] \('phantom_001'\) has no 'image'")
def dataset_case_without_image(ws):
    edit_json(ws / "ds" / "dataset.json", lambda d: d["cases"][1].pop("image"))
    return TRAIN_DS


@row(r"cases\[0\] \('phantom_000'\).image must be a file name or a list of file names .*got the number 5")
def dataset_image_as_number(ws):
    edit_json(ws / "ds" / "dataset.json", lambda d: d["cases"][0].update(image=5))
    return TRAIN_DS


@row(r"'unannotated_value' must be an integer .*got the string \"-1\"")
def dataset_unannotated_value_as_string(ws):
    edit_json(ws / "ds" / "dataset.json", lambda d: d.update(unannotated_value="-1"))
    return TRAIN_DS


@row(r"cases\[0\] and cases\[1\] have the same id 'phantom_000'")
def dataset_duplicate_case_ids(ws):
    edit_json(ws / "ds" / "dataset.json", lambda d: d["cases"][1].update(id="phantom_000"))
    return TRAIN_DS


@row(r"Annotation sidecar '.*phantom_000_scribbles.json': size_ranges_ml\['1'\] .* must be a list of 2 finite")
def sidecar_size_range_as_string(ws):
    (ws / "ds" / "phantom_000_scribbles.json").write_text('{"size_ranges_ml": {"1": "large"}}')
    return TRAIN_DS


@row(r"Size range for class 1 starts at 5000 mL, more than the whole image holds")
def sidecar_size_range_beyond_the_image(ws):
    (ws / "ds" / "phantom_000_scribbles.json").write_text('{"size_ranges_ml": {"1": [5000, 6000]}}')
    return TRAIN_DS


@row(r"Centroid range for class 2 .* lies outside the image")
def sidecar_centroid_range_outside_the_image(ws):
    (ws / "ds" / "phantom_000_scribbles.json").write_text(
        '{"centroid_ranges_mm": {"2": [[9000, 9000, 9000], [9100, 9100, 9100]]}}')
    return TRAIN_DS


def _model_written(ws: Path, result: Result) -> None:
    assert json.loads((ws / "new_model" / "model.json").read_text())["summary"]["training_cases"] == [
        "phantom_000", "phantom_001"]


@row(None, check=_model_written)
def dataset_case_without_id_takes_its_file_name(ws):
    edit_json(ws / "ds" / "dataset.json", lambda d: [c.pop("id") for c in d["cases"]])
    return TRAIN_DS


# -- damaged images are refused, never read with zeros in place of the missing voxels
@row(r"'.*phantom_001.nii.gz' is truncated: its gzip stream ends before the end")
def truncated_image_in_a_dataset(ws):
    truncate(ws / "ds" / "phantom_001.nii.gz")
    return TRAIN_DS


@row(r"'img.nii' is truncated: its header describes \d+ bytes of voxels and header, the file holds \d+")
def truncated_uncompressed_image(ws):
    truncate(uncompressed_copy(ws / "img.nii.gz", ws / "img.nii"), 0.6)
    return [*PREDICT, "--image", "img.nii", "--out", "seg.nii.gz"]


@row(r"phantom_000_scribbles.nii.gz' is truncated")
def truncated_scribbles(ws):
    truncate(ws / "ds" / "phantom_000_scribbles.nii.gz", 0.7)
    return TRAIN_DS


@row(r"annotation of case 'phantom_000' '.*' holds non-integer values \(e.g. 0.5\)")
def annotation_with_non_integer_labels(ws):
    from WeakSegLib.data.volume import read_volume, write_volume

    path = ws / "ds" / "phantom_000_scribbles.nii.gz"
    volume = read_volume(path)
    labels = volume.array.astype(np.float32)
    labels[labels == 1] = 0.5
    write_volume(volume.with_array(labels), path)
    return TRAIN_DS


@row(r"The prediction 'img.nii.gz' holds non-integer values")
def evaluate_an_image_as_a_prediction(ws):
    return ["evaluate", "--pred", "img.nii.gz", "--gt", "gt.nii.gz"]


@row(r"'nan.nii.gz' holds 5 NaN/Inf voxel\(s\), which NIfTI readers silently turn into 0")
def predict_an_image_with_nans(ws):
    from WeakSegLib.data.volume import read_volume

    image = read_volume(ws / "img.nii.gz").array.copy()
    image.flat[:5] = np.nan
    write_image(ws / "nan.nii.gz", image)
    return [*PREDICT, "--image", "nan.nii.gz", "--out", "seg.nii.gz"]


@row(None, warning=r"'gt0.nii': the NIfTI header gives a voxel spacing of \(0, 1.2, 3\); the reader used \(1, 1.2, 3\)")
def zero_spacing_is_reported(ws):
    set_nifti_spacing(uncompressed_copy(ws / "gt.nii.gz", ws / "gt0.nii"), (0.0, 1.2, 3.0))
    return ["simulate", "--gt", "gt0.nii"]


@row(None, warning=r"'gtneg.nii': the NIfTI header gives a voxel spacing of \(-1.2, 1.2, 3\)")
def negative_spacing_is_reported(ws):
    set_nifti_spacing(uncompressed_copy(ws / "gt.nii.gz", ws / "gtneg.nii"), (-1.2, 1.2, 3.0))
    return ["simulate", "--gt", "gtneg.nii"]


@row(None, warning=r"'gtm.nii.gz' has a voxel spacing of \(0.0012, 0.0012, 0.003\) mm, which looks like metres")
def spacing_in_metres_is_warned(ws):
    from WeakSegLib.data.volume import read_volume

    write_image(ws / "gtm.nii.gz", read_volume(ws / "gt.nii.gz").array, spacing=(0.0012, 0.0012, 0.003))
    return ["simulate", "--gt", "gtm.nii.gz"]


# -- implausible inputs get a warning saying what will go wrong
@row(None, warning=r"Every voxel label of dataset 'phantom' is class 1 \(Outer\): .*the model cannot learn where "
                   r"Outer ends")
def scribbles_of_one_class_only(ws):
    from WeakSegLib.data.volume import read_volume, write_volume

    for i in (0, 1):
        path = ws / "ds" / f"phantom_00{i}_scribbles.nii.gz"
        volume = read_volume(path)
        labels = volume.array.copy()
        labels[labels != 1] = -1
        write_volume(volume.with_array(labels), path)
    return TRAIN_DS


@row(None, warning=r"'iso.nii.gz' has near-isotropic voxels .* but the model is 2D")
def a_2d_model_on_an_isotropic_volume(ws):
    from WeakSegLib.data.volume import read_volume

    write_image(ws / "iso.nii.gz", read_volume(ws / "img.nii.gz").array, spacing=(1.0, 1.0, 1.0))
    return [*PREDICT, "--image", "iso.nii.gz", "--out", "seg.nii.gz"]


@row(r"The image of case 'a' is \(1, 12, 12\) voxels \(z, y, x\): too small for the network")
def images_too_small_for_the_network(ws):
    (ws / "small").mkdir()
    labels = np.full((1, 12, 12), -1, np.int16)
    labels[0, 2:4, 2:4], labels[0, 8:10, 8:10] = 0, 1
    write_image(ws / "small" / "i.nii.gz", np.random.default_rng(0).random((1, 12, 12)).astype(np.float32))
    write_image(ws / "small" / "s.nii.gz", labels)
    (ws / "small" / "dataset.json").write_text(json.dumps({
        "classes": [{"id": 0, "name": "Background"}, {"id": 1, "name": "Spot"}],
        "cases": [{"id": "a", "image": "i.nii.gz", "annotation": "s.nii.gz"}]}))
    return ["train", "--dataset", "small", "--out", "new_model", *TRAIN]


# -- usage errors are one line too
@row(r"weakseg train: error: the following arguments are required: --out", code=2)
def a_required_option_missing(ws):
    return ["train", "--dataset", "ds"]


@row(r"Unknown device 'quantum'; use auto, cpu, cuda, cuda:N or mps")
def an_unknown_device(ws):
    return ["predict", "--model", "model", "--image", "img.nii.gz", "--out", "seg.nii.gz", "--device", "quantum"]


@row(r"Image file 'missing.nii.gz' does not exist|--image 'missing.nii.gz' does not exist")
def a_missing_image(ws):
    return [*PREDICT, "--image", "missing.nii.gz", "--out", "seg.nii.gz"]


@pytest.mark.parametrize("case", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_gives_one_line_or_a_clean_recovery_and_changes_no_input(ws, case: Row):
    args = case.prepare(ws)
    before = checksums(ws)
    result = weakseg(*args, cwd=ws)
    after = checksums(ws)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if case.expect is None:
        assert result.returncode == 0, result.stderr[-3000:]
        assert not result.error_lines, result.stderr
        if case.warning:
            warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("WARNING")]
            assert any(re.search(case.warning, ln) for ln in warnings), result.stderr
    else:
        assert result.returncode == case.code, (result.returncode, result.stderr[-3000:])
        assert len(result.error_lines) == 1, result.stderr
        (line,) = result.error_lines
        assert line.startswith(f"weakseg {args[0]}: error: "), line
        assert re.search(case.expect, line), line
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed <= case.replaced, f"input files changed: {sorted(changed - case.replaced)}"
    if case.expect is not None:
        assert set(after) == set(before), f"files written by a failed command: {sorted(set(after) - set(before))}"
    if case.check is not None:
        case.check(ws, result)


def test_the_table_holds_at_least_forty_rows():
    assert len(ROWS) >= 40 and len({r.name for r in ROWS}) == len(ROWS)


def test_debug_shows_the_traceback_the_one_line_hides(ws):
    write_config(ws / "c.json", {"iterations": "20"})
    plain = weakseg(*TRAIN_DS, "--config", "c.json", cwd=ws)
    debug = weakseg(*TRAIN_DS, "--config", "c.json", "--debug", cwd=ws)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "must be an integer" in debug.stderr


def test_a_lock_names_its_owner_from_the_instant_it_exists_and_a_killed_lockers_private_file_goes(tmp_path):
    """The lock is linked into place already written, so a kill while locking never leaves an empty lock
    (which would shut out every later run for its first seconds); the private file of a locker that was
    killed is removed by the next one."""
    from WeakSegLib.model import ModelFolderLock, _create_exclusively

    lock = tmp_path / ".m.lock"
    _create_exclusively(lock, '{"pid": 1}')
    assert json.loads(lock.read_text()) == {"pid": 1}
    with pytest.raises(FileExistsError):
        _create_exclusively(lock, '{"pid": 2}')
    assert json.loads(lock.read_text()) == {"pid": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock"]
    lock.unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f".m.lock.tmp{dead}.1").write_text("")           # left by a locker killed mid-way
    with ModelFolderLock(tmp_path / "m"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ real kills
@pytest.mark.slow
def test_kill_9_mid_run_locks_out_a_second_run_then_resume_continues(ws):
    """A running training locks its folder (a second run stops at once); kill -9 leaves a consistent folder
    and a stale lock, which --resume takes over to continue from the last checkpoint."""
    from WeakSegLib.model import Model

    before = checksums(ws / "ds")
    run = start_training(ws, "killed", "--iterations", "100000", "--minutes", "10")
    try:
        wait_for(ws / "killed" / "checkpoint.pt", run)
        second = weakseg(*TRAIN_DS[:3], "--out", "killed", "--overwrite", *TRAIN, cwd=ws)
        assert second.returncode == 1 and "is being written by another run (pid" in second.stderr, second.stderr
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    assert (ws / ".killed.lock").exists()                       # left by the killed run
    state = torch.load(ws / "killed" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] >= 2 and state["iteration"] % 2 == 0
    assert not (ws / "killed" / "model.json").exists()          # no half-written model
    resumed = weakseg("train", "--dataset", "ds", "--out", "killed", "--config", "slow.json", "--resume",
                      "--iterations", str(state["iteration"] + 2), "--progress", "none", cwd=ws)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Taking over the lock" in resumed.stderr and "Resumed from" in resumed.stderr
    model = Model.load(ws / "killed")
    assert model.summary["iterations"] == state["iteration"] + 2
    assert not (ws / ".killed.lock").exists()
    assert checksums(ws / "ds") == before


def test_resume_with_another_dataset_says_the_checkpoint_belongs_elsewhere(ws):
    shutil.copytree(ws / "ds", ws / "ds_one")
    edit_json(ws / "ds_one" / "dataset.json", lambda d: d.update(cases=d["cases"][:1]))
    result = weakseg("train", "--dataset", "ds_one", "--out", "model", "--resume", *TRAIN, cwd=ws)
    assert result.returncode == 1 and len(result.error_lines) == 1, result.stderr
    assert "belongs to another dataset/plan (its dataset cases" in result.error_lines[0]


def test_overwrite_leaves_no_old_checkpoint_and_a_failed_run_keeps_the_old_model(ws):
    """A new run on a model folder first removes the old run's checkpoint; when it fails before its own
    first checkpoint, the folder still holds the old, consistent model and says so."""
    from WeakSegLib.model import Model

    old = checksums(ws / "model")
    write_config(ws / "explode.json", {"weights": {"partial_ce": 1e308, "partial_dice": 1e308}, "dims": 2,
                                       "base_filters": 4})
    result = weakseg("train", "--dataset", "ds_boxes", "--out", "model", "--overwrite", "--config",
                     "explode.json", *TRAIN, cwd=ws)
    assert result.returncode == 1 and len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert "The loss became" in line and "nothing was saved" in line and "still holds the model it held" in line
    assert not (ws / "model" / "checkpoint.pt").exists()
    assert {k: v for k, v in checksums(ws / "model").items() if k != "checkpoint.pt"} == {
        k: v for k, v in old.items() if k != "checkpoint.pt"}
    Model.load(ws / "model")


@pytest.mark.slow
def test_a_model_folder_is_always_consistent_whenever_its_writer_is_killed(tmp_path):
    """kill -9 a process that rewrites a model folder in a loop (two models of 3 and 5 classes): after every
    kill the folder loads, and its weights are the ones its model.json describes."""
    from WeakSegLib.model import Model

    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    folder = tmp_path / "m"
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(folder)], env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        model = Model.load(folder)                     # digest, classes and plan all agree, or it raises
        seen.add(len(model.classes))
        assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.pt"]
    assert seen <= {3, 5}


def test_the_last_good_checkpoint_is_from_before_the_step_that_exploded(tmp_path):
    from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom_dataset
    from WeakSegLib.data.simulate import simulate
    from WeakSegLib.model import Model
    from WeakSegLib.training import TrainConfig, TrainingError, train

    data = make_phantom_dataset(n_cases=1, seed=0, shape=SHAPE)
    data.cases[0].annotation = simulate(data.cases[0].ground_truth, len(PHANTOM_CLASSES), "scribbles", seed=0)
    config = TrainConfig(minutes=None, iterations=8, seed=0, dims=2, base_filters=4, batch_size=2,
                         propagate_scribbles=False, checkpoint_every=2, num_threads=1)
    with pytest.raises(TrainingError, match=r"(loss became|blew up).*the model of the last good checkpoint "
                                            r"\(iteration [24]\) is saved in"):
        train(data, config, tmp_path / "m", callbacks=[BlowUp(at=5)])
    state = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] <= 4
    assert max(float(v.abs().max()) for v in state["network"].values() if v.is_floating_point()) < 1e4
    model = Model.load(tmp_path / "m")
    assert model.summary["iterations"] == state["iteration"]


def test_where_no_atomic_exchange_exists_a_write_cut_between_its_two_renames_is_put_back(ws):
    """The fallback of systems without an atomic exchange renames twice; a kill between the renames leaves
    no folder and both complete versions beside it. Loading puts the new one back."""
    from WeakSegLib.model import Model

    new = checksums(ws / "model5")
    os.rename(ws / "model", ws / ".model.old-999999")          # the first rename (old folder aside)
    os.rename(ws / "model5", ws / ".model.new-999999")         # the new folder, complete, not yet in place
    model = Model.load(ws / "model")
    assert len(model.classes) == 5 and checksums(ws / "model") == new

"""WeakSegSlicerLib.runner: one job at a time, the model kept outside the job folder, job folders (which
hold patient images) deleted, a run of the effect bound to the nodes it started from."""

from __future__ import annotations

import json

import pytest
from mrml_scene import drawn_scene, new_segmentation, scene_removing_added_nodes
from WeakSegSlicerLib import runner

from WeakSegLib.jobs import protocol


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


def _model(folder, name="Organ"):
    folder.mkdir(parents=True)
    (folder / protocol.MODEL_JSON).write_text(json.dumps({"classes": [
        {"id": 0, "name": "Background", "color": [0, 0, 0]}, {"id": 1, "name": name, "color": [1, 2, 3]}]}))
    (folder / "weights.pt").write_bytes(b"w")
    return folder


def test_keep_model_replaces_the_current_model(tmp_path):
    first = runner.keep_model(_model(tmp_path / "job1" / "model", "Liver"), tmp_path / "models")
    assert first == tmp_path / "models" / runner.CURRENT_MODEL
    second = runner.keep_model(_model(tmp_path / "job2" / "model", "Kidney"), tmp_path / "models")
    assert second == first and protocol.model_classes(second)[1].name == "Kidney"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [runner.CURRENT_MODEL]


def test_tidy_job_dir_deletes_patient_images_and_keeps_the_log_of_a_failure(tmp_path):
    for name, failed in (("ok", False), ("failed", True)):
        job = tmp_path / name
        (job / "data").mkdir(parents=True)
        (job / "data" / "case.nii.gz").write_bytes(b"image")
        (job / protocol.WORKER_LOG).write_text("Traceback...")
        (job / protocol.JOB_JSON).write_text("{}")
        runner.tidy_job_dir(job, failed=failed)
    assert not (tmp_path / "ok").exists()
    assert [p.name for p in (tmp_path / "failed").iterdir()] == [protocol.WORKER_LOG]
    runner.tidy_job_dir(tmp_path / "absent", failed=False)  # nothing to do


def test_new_job_dirs_are_unique(tmp_path):
    first = runner.new_job_dir(tmp_path, "train")
    first.mkdir()
    second = runner.new_job_dir(tmp_path, "train")
    assert first != second and second.name.startswith(first.name)


def test_run_bound_to_the_nodes_it_started_from(scene):
    volume, seg, roi, points = drawn_scene(scene)
    other = new_segmentation(scene, volume, "another")
    assert runner.run_target_current(seg, volume, seg, volume) == "current"
    assert runner.run_target_current(seg, volume, other, volume) == "other"
    assert runner.run_target_current(seg, volume, None, None) == "other"
    scene.RemoveNode(seg)
    assert runner.run_target_current(seg, volume, seg, volume) == "gone"


def test_a_failed_start_leaves_no_patient_images_and_nothing_running(scene, tmp_path):
    volume, seg, roi, points = drawn_scene(scene)
    jobs = runner.JobRunner(tmp_path / "jobs", tmp_path / "models")
    with pytest.raises(ValueError, match="Unknown training option"):
        jobs.start_training([(volume, seg)], {"minuts": 1})
    assert not jobs.is_running() and list((tmp_path / "jobs").iterdir()) == []


FAKE_DONE = """
import json, os, sys
job = sys.argv[1]
os.makedirs(os.path.join(job, "model"), exist_ok=True)
os.makedirs(os.path.join(job, "predictions"), exist_ok=True)
open(os.path.join(job, "model", "model.json"), "w").write("{}")
open(os.path.join(job, "predictions", "CT.nii.gz"), "wb").write(b"not an image")
print(json.dumps({"type": "done", "status": "completed", "model": "model",
                  "predictions": {"CT": "predictions/CT.nii.gz"}}), flush=True)
"""


def test_results_that_cannot_be_loaded_are_a_failure_not_a_completion(scene, tmp_path):
    import sys

    from WeakSegSlicerLib import process, sessions

    from WeakSegLib.data.dataset import ClassInfo

    volume, seg, roi, points = drawn_scene(scene)
    session = sessions.TrainingSession([(volume, seg)], {"iterations": 1}, job_dir=tmp_path / "job")
    (tmp_path / "fake.py").write_text(FAKE_DONE)
    session.worker = process.WorkerProcess([sys.executable, str(tmp_path / "fake.py"), str(session.job_dir)]).start()
    session.status, session.volume_nodes = "running", {"CT": volume}
    session.classes = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (1, 2, 3))]
    session.terminologies = {}
    assert session.wait(timeout=60) == "failed"      # finish() reports it; it does not raise
    assert session.error_message.startswith("The training finished but its results could not be loaded:")
    assert "completed" not in session.error_message.lower()

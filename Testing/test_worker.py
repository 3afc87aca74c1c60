"""The worker protocol, exercised by running the worker as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom_dataset
from WeakSegLib.data.simulate import simulate
from WeakSegLib.data.volume import read_volume
from WeakSegLib.jobs import protocol
from WeakSegLib.jobs.protocol import EXIT_CANCELLED, EXIT_INVALID_JOB, EXIT_OK
from WeakSegLib.jobs.worker import InvalidJobError, read_job, write_job
from WeakSegLib.model import Model
from WeakSegLib.utils import read_json_object

pytestmark = [pytest.mark.integration]

K = len(PHANTOM_CLASSES)
TINY = {"base_filters": 8, "batch_size": 2, "propagate_scribbles": False, "checkpoint_every": 2, "log_every": 1,
        "seed": 0}


def _dataset():
    data = make_phantom_dataset(n_cases=2, seed=2, shape=(8, 40, 40))
    for i, case in enumerate(data.cases):
        case.annotation = simulate(case.ground_truth, K, "scribbles", seed=i)
    return data


def _start(job_dir, **env) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "WeakSegLib", "worker", str(job_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_training(proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event["type"] == "progress" and event.get("iteration", 0) >= 1:
            return
    raise AssertionError("the worker never reported training progress")


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]   # every line is JSON


def test_worker_completes_streams_json_lines_and_writes_results(tmp_path):
    data = _dataset()
    write_job(tmp_path / "job", data, {"minutes": None, "iterations": 4, **TINY}, [data.cases[1].id])
    proc = _start(tmp_path / "job")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, err[-2000:]
    events = _events(out)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and all(0.0 <= e["fraction"] <= 1.0 for e in progress)
    assert any("losses" in e and "partial_ce" in e["losses"] for e in progress)
    done = events[-1]
    assert done["status"] == "completed" and done["iterations"] == 4
    pred_path = tmp_path / "job" / done["predictions"][data.cases[1].id]
    assert pred_path.exists()
    model = Model.load(tmp_path / "job" / done["model"])
    assert model.class_names == data.class_names


def test_sigterm_cancels_and_leaves_a_loadable_model(tmp_path):
    data = _dataset()
    write_job(tmp_path / "job", data, {"minutes": 30, **TINY}, [data.cases[0].id])
    proc = _start(tmp_path / "job")
    deadline = time.monotonic() + 240
    seen_progress = False
    while time.monotonic() < deadline and not seen_progress:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        seen_progress = event["type"] == "progress" and event.get("iteration", 0) >= 1
    assert seen_progress, "the worker never reported training progress"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_CANCELLED, err[-2000:]
    done = _events(out)[-1]
    assert done["type"] == "done" and done["status"] == "cancelled"
    assert (tmp_path / "job" / done["predictions"][data.cases[0].id]).exists()
    Model.load(tmp_path / "job" / "model").predict(data.cases[0].image)


def test_cancel_file_stops_the_worker_and_keeps_model_and_predictions(tmp_path):
    """Cancel without signals (what works through PythonSlicer's launcher and on Windows): JOB/cancel."""
    data = _dataset()
    write_job(tmp_path / "job", data, {"minutes": 30, **TINY}, [data.cases[0].id], probabilities=True)
    proc = _start(tmp_path / "job")
    _wait_for_training(proc)
    protocol.request_cancel(tmp_path / "job")
    assert protocol.cancel_requested(tmp_path / "job")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_CANCELLED, err[-2000:]
    done = _events(out)[-1]
    assert done["type"] == "done" and done["status"] == "cancelled"
    results = protocol.done_result_files(tmp_path / "job", done)
    assert results["status"] == "cancelled" and results["model"] == tmp_path / "job" / "model"
    probabilities = read_volume(results["probabilities"][data.cases[0].id]).array
    assert probabilities.shape == (*data.cases[0].image.shape, K)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-3)
    Model.load(results["model"]).predict(data.cases[0].image)


def test_worker_stops_when_the_application_has_ended(tmp_path):
    """WEAKSEG_PARENT_PID names the application: when it is gone, the worker saves and stops."""
    data = _dataset()
    write_job(tmp_path / "job", data, {"minutes": 30, **TINY}, [])
    application = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    proc = _start(tmp_path / "job", **{protocol.PARENT_PID_ENV: str(application.pid)})
    _wait_for_training(proc)
    application.kill()
    application.wait()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_CANCELLED, err[-2000:]
    assert _events(out)[-1]["status"] == "cancelled"
    assert "application that started the worker has ended" in err


def test_done_result_files_checks_the_files(tmp_path):
    assert protocol.done_result_files(tmp_path, None) is None
    assert protocol.done_result_files(tmp_path, {"type": "done", "status": "exploded"}) is None
    done = {"type": "done", "status": "completed", "model": "model", "predictions": {"a": "predictions/a.nii.gz"}}
    assert protocol.done_result_files(tmp_path, done) is None            # no model.json
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / protocol.MODEL_JSON).write_text("{}")
    assert protocol.done_result_files(tmp_path, done) is None            # prediction missing
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "a.nii.gz").write_bytes(b"x")
    assert protocol.done_result_files(tmp_path, done)["predictions"] == {"a": tmp_path / "predictions" / "a.nii.gz"}


@pytest.mark.parametrize("key, value, message", [
    ("predict", "case", "job.json: 'predict' must be a list of case ids, got 'case' (str)."),
    ("probabilities", "yes", "job.json: 'probabilities' must be true or false, got 'yes' (str)."),
    ("model", 3, "job.json: 'model' must be a folder name (a string), got 3 (int)."),
    ("version", "1", "job.json: 'version' must be an integer, got '1' (str)."),
    ("config", [], "job.json: 'config' must be an object of training options, got [] (list)."),
    ("config.iterations", "20", "job.json (config): 'iterations' must be an integer, got the string \"20\"."),
    ("config.minutes", True, "job.json (config): 'minutes' must be a finite number, got the boolean true."),
    ("config.device", 0, "job.json (config): 'device' must be a string, got the number 0."),
])
def test_job_values_are_type_checked_with_one_line_naming_the_key(tmp_path, key, value, message):
    data = _dataset()
    job = tmp_path / "job"
    write_job(job, data, {"minutes": None, "iterations": 2, **TINY})
    spec = json.loads((job / "job.json").read_text())
    if key.startswith("config."):
        spec["config"][key.split(".", 1)[1]] = value
    else:
        spec[key] = value
    (job / "job.json").write_text(json.dumps(spec))
    with pytest.raises(InvalidJobError) as error:
        read_job(job)
    assert str(error.value) == message
    with pytest.raises(ValueError, match="'seed' must be an integer"):
        write_job(tmp_path / "other", data, {"seed": 1.5})


@pytest.mark.parametrize("corruption, message", [
    ("missing", "job.json is missing"),
    ("garbage", "job.json is corrupted"),
    ("bad-option", "Unknown training option"),
    ("missing-image", "does not exist"),
])
def test_corrupted_job_gives_one_clear_error_line_and_a_nonzero_exit(tmp_path, corruption, message):
    data = _dataset()
    job = tmp_path / "job"
    write_job(job, data, {"minutes": None, "iterations": 2, **TINY})
    if corruption == "missing":
        (job / "job.json").unlink()
    elif corruption == "garbage":
        (job / "job.json").write_text("{not json")
    elif corruption == "bad-option":
        spec = json.loads((job / "job.json").read_text())
        spec["config"]["learnin_rate"] = 1.0
        (job / "job.json").write_text(json.dumps(spec))
    else:
        next((job / "data").glob("phantom_000.nii.gz")).unlink()
    proc = _start(job)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INVALID_JOB, (out, err[-1000:])
    events = _events(out)
    assert len(events) == 1 and events[0]["type"] == "error"
    assert message in events[0]["message"]
    assert "Traceback" not in events[0]["message"]


def test_write_job_refuses_bad_config_and_unknown_cases(tmp_path):
    data = _dataset()
    with pytest.raises(ValueError, match="Unknown training option"):
        write_job(tmp_path / "a", data, {"minuts": 1})
    with pytest.raises(ValueError, match="not in the job's dataset"):
        write_job(tmp_path / "b", data, {"minutes": 1}, ["nope"])


def test_protocol_lines_and_descriptions():
    assert protocol.parse_worker_line('{"type": "error", "message": "out of memory"}')["type"] == "error"
    assert protocol.parse_worker_line("{not json")["type"] == "log"
    assert protocol.parse_worker_line('{"no": "type"}')["type"] == "log"
    assert "out of memory" in protocol.describe_worker_exit(3, "CUDA out of memory", "/tmp/log")
    assert "refused" in protocol.describe_worker_exit(2, "no annotation")
    assert "exit code 1" in protocol.describe_worker_exit(1)
    assert protocol.describe_message({"type": "progress", "fraction": 0.5}) is None
    assert protocol.describe_message({"type": "start", "pid": 7, "cases": 2, "device": "cuda"}) == \
        "Worker started (pid 7): 2 case(s) on cuda."
    done = {"type": "done", "status": "completed", "seconds": 65, "predictions": {"a": "p"}}
    assert protocol.describe_message(done) == "Worker completed in 1 min 05 s; 1 segmentation(s) written."
    assert protocol.describe_message({"type": "error", "message": "OOM"}) == "ERROR: OOM"
    assert protocol.describe_message({"type": "log", "level": "WARNING", "message": "w"}) == "WARNING: w"
    assert protocol.format_eta(75.2) == "1 min 15 s" and protocol.format_eta(-1) == ""


def test_job_and_model_files(tmp_path):
    assert protocol.prediction_path("case 1/a") == "predictions/case_1_a.nii.gz"
    with pytest.raises(FileNotFoundError, match="is missing"):
        read_json_object(tmp_path / "nothing.json", "nothing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_json_object(tmp_path / "list.json", "list.json")
    with pytest.raises(FileNotFoundError, match="not a WeakSeg model folder"):
        protocol.model_classes(tmp_path)
    (tmp_path / protocol.MODEL_JSON).write_text(json.dumps({"classes": [{"id": 0, "name": "Background"}]}))
    with pytest.raises(ValueError, match="not a valid WeakSeg model description"):
        protocol.model_classes(tmp_path)

"""Cancel through a launcher, as inside Slicer: ``PythonSlicer`` starts the real Python as a child, does not
forward SIGTERM and reports an exit code of its own.  The worker is stopped through the cancel file of its
job folder, the result is judged by the worker's ``done`` message and files, and a worker that does not
stop is killed, with its whole process tree, after the deadline (real processes, no mocks)."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import time

import psutil
import pytest
from mrml_scene import scene_removing_added_nodes, sphere_with_scribbles
from WeakSegSlicerLib import process, sessions

from WeakSegLib.jobs import protocol

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.name == "nt", reason="the launcher is a script")]

LAUNCHER = textwrap.dedent("""\
    #!{python}
    # Like CTK's AppLauncher (PythonSlicer): run the real Python as a child; SIGTERM kills the launcher
    # alone (nothing is forwarded); the exit code is the launcher's own.
    import os, signal, subprocess, sys
    child = subprocess.Popen([sys.executable] + sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *args: os._exit(143))
    child.wait()
    sys.exit(1)
""")

STUCK_WORKER = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(json.dumps({"type": "start", "pid": __import__("os").getpid(), "helper": helper.pid}), flush=True)
    while True:                      # never looks at the cancel file
        time.sleep(0.05)
""")

TINY = {"base_filters": 8, "batch_size": 2, "propagate_scribbles": False, "log_every": 1, "checkpoint_every": 2,
        "device": "cpu", "seed": 0}


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


@pytest.fixture
def launcher(tmp_path):
    path = tmp_path / "PythonSlicer"
    path.write_text(LAUNCHER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _case(scene):
    return sphere_with_scribbles(scene, (12, 24, 24), "launched")


def _follow(session, until, timeout=300.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        session.poll()
        if until():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out; log: {session.log}")


def test_cancel_through_a_launcher_keeps_the_model_and_the_results(scene, tmp_path, launcher):
    volume, seg = _case(scene)
    session = sessions.TrainingSession([(volume, seg)], {"minutes": 30, **TINY}, job_dir=tmp_path / "job",
                                       python_executable=launcher).start()
    _follow(session, lambda: any(m.get("iteration", 0) >= 1 for m in session.history))
    session.cancel(grace_s=240)
    assert (tmp_path / "job" / protocol.CANCEL_FILE).is_file()
    _follow(session, lambda: not session.running)
    session.finish()
    assert session.worker.returncode == 1            # the launcher's own code, not the worker's 4
    assert session.status == "cancelled", session.error_message
    assert protocol.model_classes(session.model_dir)[1].name == "Organ"
    assert session.result_nodes["launched"].GetName() == "launched WeakSeg"


def test_completed_run_through_a_launcher_is_judged_by_its_done_message(scene, tmp_path, launcher):
    volume, seg = _case(scene)
    session = sessions.TrainingSession([(volume, seg)], {"iterations": 2, **TINY}, job_dir=tmp_path / "job",
                                       python_executable=launcher).start()
    assert session.wait(timeout=300) == "completed", session.error_message
    assert session.worker.returncode == 1 and list(session.result_nodes) == ["launched"]


def test_a_stuck_worker_behind_a_launcher_is_killed_with_its_tree(tmp_path, launcher):
    script = tmp_path / "stuck_worker.py"
    script.write_text(STUCK_WORKER)
    worker = process.WorkerProcess([launcher, str(script)], cwd=tmp_path, cancel_path=tmp_path / "cancel").start()
    end = time.monotonic() + 30
    start = []
    while not start and time.monotonic() < end:
        start = [m for m in worker.poll() if m["type"] == "start"]
        time.sleep(0.05)
    assert start, "the stuck worker did not start"
    pids = [worker.process.pid, start[0]["pid"], start[0]["helper"]]
    worker.cancel(grace_s=1.0)
    assert (tmp_path / "cancel").is_file() and worker.running   # asked, not signalled
    worker.wait(timeout=30)
    time.sleep(0.3)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid

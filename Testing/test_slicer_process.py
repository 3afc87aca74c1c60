"""WeakSegSlicerLib.process: the worker subprocess streams JSON lines; Cancel terminates the process
tree and kills it after the grace period (real processes, no mocks)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest
from WeakSegSlicerLib import process

from WeakSegLib.jobs import protocol

pytestmark = [pytest.mark.integration]

FAKE_WORKER = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    mode = sys.argv[1]
    def say(**message):
        print(json.dumps(message), flush=True)
    def on_term(*_):
        say(type="done", status="cancelled", model="model", predictions={})
        sys.exit(4)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else on_term)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    say(type="start", child=child.pid)
    print("a plain line from a library", flush=True)
    print("warning on stderr", file=sys.stderr, flush=True)
    steps = 3 if mode == "quick" else 600
    for i in range(steps):
        say(type="progress", fraction=i / steps, iteration=i, eta_s=1.0, losses={"pce": 1.0 / (i + 1)})
        time.sleep(0.05)
    if mode == "fail":
        pass
    child.kill()
    say(type="done", status="completed", model="model", predictions={})
""")


def _start_fake(tmp_path, mode):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return process.WorkerProcess([sys.executable, str(script), mode], cwd=tmp_path,
                                 stderr_path=tmp_path / "stderr.log").start()


def _wait_for(worker, kind, timeout=20.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        seen += worker.poll()
        if any(m["type"] == kind for m in seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no '{kind}' message within {timeout} s: {seen}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def test_worker_process_streams_messages(tmp_path):
    worker = _start_fake(tmp_path, "quick")
    assert worker.wait(timeout=30) == 0
    messages = worker.poll()
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("progress") == 3
    assert {"type": "log", "level": "INFO", "message": "a plain line from a library"} in messages
    assert worker.done_message["status"] == "completed"
    assert "warning on stderr" in (tmp_path / "stderr.log").read_text()
    assert worker.finished


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_worker_cancel_sends_sigterm_to_the_tree(tmp_path):
    worker = _start_fake(tmp_path, "slow")
    start = _wait_for(worker, "progress")
    child = next(m["child"] for m in start if m["type"] == "start")
    worker.cancel(grace_s=20)
    assert worker.wait(timeout=20) == protocol.EXIT_CANCELLED
    worker.poll()
    assert worker.done_message["status"] == "cancelled"
    time.sleep(0.3)
    assert not _alive(child)  # SIGTERM reached the grandchild too (the whole process tree)
    assert "cancelled" in protocol.describe_worker_exit(worker.returncode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_worker_killed_after_grace_period(tmp_path):
    worker = _start_fake(tmp_path, "stubborn")
    start = _wait_for(worker, "progress")
    child = next(m["child"] for m in start if m["type"] == "start")
    worker.cancel(grace_s=0.5)
    code = worker.wait(timeout=20)
    assert code == -signal.SIGKILL
    time.sleep(0.3)
    assert not _alive(child)
    assert "signal 9" in protocol.describe_worker_exit(code)


def test_worker_command_environment_and_python(tmp_path):
    command = process.worker_command(tmp_path, "/opt/Slicer/PythonSlicer")
    assert command == ["/opt/Slicer/PythonSlicer", "-m", "WeakSegLib", "worker", str(tmp_path)]
    env = process.worker_environment({"PYTHONPATH": "/x"}, device="cpu")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(process.library_root()), "/x"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["PYTHONUNBUFFERED"] == "1"
    assert (process.library_root() / "WeakSegLib" / "mrml" / "__init__.py").is_file()
    fake_app = tmp_path / "bin"
    fake_app.mkdir()
    (fake_app / "PythonSlicer").write_text("")
    assert process.find_python_executable(str(fake_app)) == str(fake_app / "PythonSlicer")
    assert process.find_python_executable(None) == sys.executable

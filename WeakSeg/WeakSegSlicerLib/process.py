"""The worker subprocess: which Python runs it, its command line and environment, its JSON-lines
output read on a thread, and Cancel (one place).

Cancel never relies on signals reaching the worker: ``PythonSlicer`` is a launcher that starts the
real Python as a child and does not forward them.  A training worker is asked to stop through the
cancel file of its job folder (it saves its model first); a process without one (``weakseg
predict``) is terminated.  Either way the process tree is killed when it is still alive after the
deadline.  Process trees are walked and signalled with psutil (Linux, macOS and Windows).  A worker
also stops by itself when the application that started it has ended (``WEAKSEG_PARENT_PID``)."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

import WeakSegLib
from WeakSegLib.jobs.protocol import MSG_DONE, MSG_ERROR, PARENT_PID_ENV, parse_worker_line

logger = logging.getLogger(__name__)


def find_python_executable(application_dir: str | None = None) -> str:
    """The Python to run the worker with: ``PythonSlicer`` next to the Slicer executable when
    ``application_dir`` (``slicer.app.applicationDirPath()``) is given, else on the PATH, else
    ``sys.executable``."""
    names = ["PythonSlicer.exe", "PythonSlicer"] if os.name == "nt" else ["PythonSlicer"]
    if application_dir:
        for name in names:
            candidate = Path(application_dir) / name
            if candidate.is_file():
                return str(candidate)
    if application_dir:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def library_root() -> Path:
    """The folder that holds the ``WeakSegLib`` package (put on the worker's ``PYTHONPATH``)."""
    return Path(WeakSegLib.__file__).resolve().parent.parent


def worker_command(job_dir: str | os.PathLike, python_executable: str | None = None) -> list[str]:
    """``[python, "-m", "WeakSegLib", "worker", job_dir]``."""
    return [python_executable or sys.executable, "-m", "WeakSegLib", "worker", str(job_dir)]


def predict_command(model_dirs: Sequence[str | os.PathLike] | str | os.PathLike | None, image_path: str | os.PathLike,
                    out_path: str | os.PathLike, python_executable: str | None = None,
                    device: str | None = None) -> list[str]:
    """``[python, -m, WeakSegLib, predict, --model ..., --image ..., --out ..., --overwrite]`` (no ``--model``
    when ``model_dirs`` is None: strokes completed without a model)."""
    if isinstance(model_dirs, (str, os.PathLike)):
        model_dirs = [model_dirs]
    models = ["--model", *[str(m) for m in model_dirs]] if model_dirs else []
    command = [python_executable or sys.executable, "-m", "WeakSegLib", "predict", *models,
               "--image", str(image_path), "--out", str(out_path), "--overwrite"]
    if device:
        command += ["--device", "cuda" if device == "gpu" else device]
    return command


def worker_environment(base: Mapping[str, str] | None = None, device: str | None = None,
                       parent_pid: int | None = None) -> dict[str, str]:
    """Environment for the worker: ``WeakSegLib`` importable, unbuffered output, no GPU when
    ``device == "cpu"``, and the application's process id (default: this process), so that the worker
    stops when the application ends."""
    env = dict(os.environ if base is None else base)
    env[PARENT_PID_ENV] = str(os.getpid() if parent_pid is None else parent_pid)
    root = str(library_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def hidden_window_flags() -> int:
    """``creationflags`` that keep a console window from flashing up on Windows (0 elsewhere)."""
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0


def signal_process_tree(pid: int, kill: bool) -> None:
    """Terminate (``kill=False``: SIGTERM on POSIX) or kill the process ``pid`` and all its
    descendants, children first.  PythonSlicer is a launcher with a child, so the whole tree is
    signalled.  Processes that are already gone are skipped."""
    try:
        parent = psutil.Process(pid)
        processes = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill() if kill else process.terminate()
        except psutil.NoSuchProcess:
            pass


class WorkerProcess:
    """A worker subprocess whose stdout JSON lines are read on a thread into a queue.

    The GUI calls :meth:`poll` from a timer (never blocks); scripts call :meth:`wait`.
    :meth:`cancel` writes ``cancel_path`` (the job folder's cancel file: the worker saves its model and
    stops) or, without one, terminates the process tree; the tree is killed if it is still alive
    after ``grace_s`` seconds (checked by :meth:`poll` and :meth:`wait`).
    stderr goes to ``stderr_path`` (a log file) so that a crash can be diagnosed.
    """

    def __init__(self, command: Sequence[str], cwd: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, stderr_path: str | os.PathLike | None = None,
                 cancel_path: str | os.PathLike | None = None) -> None:
        self.command = [str(c) for c in command]
        self.cwd = str(cwd) if cwd is not None else None
        self.env = dict(env) if env is not None else None
        self.stderr_path = Path(stderr_path) if stderr_path is not None else None
        self.cancel_path = Path(cancel_path) if cancel_path is not None else None
        self.process: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self.last_error: str | None = None
        self.done_message: dict | None = None
        self.cancel_requested = False
        self._kill_deadline: float | None = None
        self._reader: threading.Thread | None = None
        self._stderr_file = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> WorkerProcess:
        if self.process is not None:
            raise RuntimeError("This worker was already started.")
        # Same session and process group as the application (no start_new_session): the worker ends with
        # it.  On Windows, no console window.
        kwargs: dict = {"creationflags": hidden_window_flags()} if os.name == "nt" else {}
        if self.stderr_path is not None:
            self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            self._stderr_file = open(self.stderr_path, "w", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._stderr_file or subprocess.DEVNULL,
                                        text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self._reader = threading.Thread(target=self._read_stdout, name="WeakSegWorkerReader", daemon=True)
        self._reader.start()
        return self

    def _read_stdout(self) -> None:
        if self.process is None or self.process.stdout is None:
            return
        for line in self.process.stdout:
            if line.strip():
                self.messages.put(parse_worker_line(line))
        self.process.stdout.close()

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def finished(self) -> bool:
        """The process has exited and all its output has been read."""
        return (self.process is not None and self.process.poll() is not None
                and (self._reader is None or not self._reader.is_alive()))

    def poll(self) -> list[dict]:
        """Messages received since the last call (never blocks); enforces the cancel deadline."""
        out = []
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                break
            if message.get("type") == MSG_ERROR:
                self.last_error = str(message.get("message", ""))
            elif message.get("type") == MSG_DONE:
                self.done_message = message
            out.append(message)
        self._enforce_kill_deadline()
        if self.finished and self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        return out

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits (scripts and tests); returns the exit code."""
        if self.process is None:
            raise RuntimeError("The worker was not started.")
        end = None if timeout is None else time.monotonic() + timeout
        while self.process.poll() is None:
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"The worker did not finish within {timeout} s.")
            self._enforce_kill_deadline()
            time.sleep(0.05)
        if self._reader is not None:
            self._reader.join(timeout=10)
        return int(self.process.returncode)

    # -------------------------------------------------------------- stopping
    def cancel(self, grace_s: float = 60.0) -> None:
        """Ask the worker to stop (cancel file: it saves its model; no cancel file: terminate the tree);
        kill the tree after ``grace_s``."""
        if not self.running:
            return
        self.cancel_requested = True
        self._kill_deadline = time.monotonic() + max(0.0, grace_s)
        if self.cancel_path is not None:
            self.cancel_path.parent.mkdir(parents=True, exist_ok=True)
            self.cancel_path.write_text("cancel\n")
        else:
            signal_process_tree(self.process.pid, kill=False)

    def kill(self) -> None:
        """Kill the whole process tree now."""
        if self.process is None or self.process.poll() is not None:
            return
        signal_process_tree(self.process.pid, kill=True)

    def _enforce_kill_deadline(self) -> None:
        """After :meth:`cancel`: kill the tree once the grace period is over and it still runs."""
        if self._kill_deadline is not None and self.running and time.monotonic() > self._kill_deadline:
            logger.warning("The worker did not stop within the grace period; killing it.")
            self.kill()

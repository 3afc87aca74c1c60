"""GPU detection for the device selector, without importing torch into the GUI."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

logger = logging.getLogger(__name__)


def describe_gpu() -> str | None:
    """Name of the first CUDA GPU, or None.  Asks ``nvidia-smi`` (fast, no torch import in the GUI);
    uses torch only when it is already imported.  Never installs anything."""
    if "torch" in sys.modules:
        try:
            torch = sys.modules["torch"]
            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
            return None
        except Exception:  # a broken CUDA install must not break the GUI
            logger.debug("GPU detection with torch failed", exc_info=True)
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run([executable, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=5, check=False,
                                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0)
    except (OSError, subprocess.SubprocessError):
        return None
    first = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
    if not first:
        return None
    name, _, memory = first.partition(",")
    try:
        return f"{name.strip()} ({float(memory) / 1024:.0f} GiB)"
    except ValueError:
        return name.strip()


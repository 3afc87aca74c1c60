"""WeakSegLib imports where the Unix-only ``resource`` module does not exist (Windows, where most users work)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration]

# ``import resource`` from WeakSegLib code raises ImportError, as on Windows (psutil itself may use it on Unix).
CODE = """
import builtins, importlib, pkgutil
_import = builtins.__import__
def _no_resource(name, globals=None, *args, **kwargs):
    if name == 'resource' and str((globals or {}).get('__name__', '')).startswith('WeakSegLib'):
        raise ImportError("No module named 'resource'")
    return _import(name, globals, *args, **kwargs)
builtins.__import__ = _no_resource
import WeakSegLib
names = [m.name for m in pkgutil.walk_packages(WeakSegLib.__path__, 'WeakSegLib.', onerror=lambda name: None)
         if not m.name.startswith('WeakSegLib.mrml')]   # the MRML bridge needs Slicer
for name in names:
    importlib.import_module(name)
from WeakSegLib.utils import current_rss_mb, peak_rss_mb
assert peak_rss_mb() > 0 and current_rss_mb() > 0
print(len(names))
"""


def test_every_module_imports_without_the_resource_module():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) > 30

"""WeakSegSlicerLib.dependencies and .gpu: what the module still has to install, which GPU it offers."""

from __future__ import annotations

from WeakSegSlicerLib import dependencies, gpu


def test_missing_requirements():
    assert dependencies.missing_requirements(["# comment", "", "numpy>=1.0", "SimpleITK>=2.0  # ok"]) == []
    assert dependencies.missing_requirements(["numpy>=999"]) == ["numpy>=999"]
    assert dependencies.missing_requirements(["surely-not-installed-pkg>=1"]) == ["surely-not-installed-pkg>=1"]
    not_needed_here = "numpy>=999; python_version < '3'"
    assert dependencies.missing_requirements(["-r other.txt", "numpy[extra]>=1.0", not_needed_here]) == []
    assert dependencies.missing_requirements(["not a requirement!"]) == ["not a requirement!"]
    assert gpu.describe_gpu() is None or isinstance(gpu.describe_gpu(), str)


"""WeakSegSlicerLib.dependencies and .gpu: what the module still has to install, which GPU it offers."""

from __future__ import annotations

import pytest
from WeakSegSlicerLib import dependencies, gpu


def test_missing_requirements():
    assert dependencies.missing_requirements(["# comment", "", "numpy>=1.0", "SimpleITK>=2.0  # ok"]) == []
    assert dependencies.missing_requirements(["numpy>=999"]) == ["numpy>=999"]
    assert dependencies.missing_requirements(["surely-not-installed-pkg>=1"]) == ["surely-not-installed-pkg>=1"]
    not_needed_here = "numpy>=999; python_version < '3'"
    assert dependencies.missing_requirements(["-r other.txt", "numpy[extra]>=1.0", not_needed_here]) == []
    assert dependencies.missing_requirements(["not a requirement!"]) == ["not a requirement!"]
    assert gpu.describe_gpu() is None or isinstance(gpu.describe_gpu(), str)



class _TorchUtils:
    """The PyTorch extension's module, as ensure_dependencies uses it."""

    def __init__(self, installed: bool):
        self.installed, self.install_calls = installed, []
        outer = self

        class PyTorchUtilsLogic:
            def torchInstalled(self):
                return outer.installed

            def installTorch(self, askConfirmation, torchVersionRequirement):
                outer.install_calls.append(torchVersionRequirement)
                return None  # the user declined

        self.PyTorchUtilsLogic = PyTorchUtilsLogic


def test_ensure_dependencies_installs_nothing_in_testing_mode(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\nsurely-not-installed-pkg>=1  # missing\n")
    installed = []
    with pytest.raises(dependencies.DependenciesMissing, match="surely-not-installed-pkg>=1 are missing and nothing "
                                                               "is installed in testing mode"):
        dependencies.ensure_dependencies(requirements, testing=True, torch_utils=_TorchUtils(True),
                                         install=installed.append)
    with pytest.raises(dependencies.DependenciesMissing, match="PyTorch is not installed"):
        dependencies.ensure_dependencies(requirements, testing=True, torch_utils=_TorchUtils(False))
    assert installed == []


def test_ensure_dependencies_asks_then_installs(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\nsurely-not-installed-pkg>=1\n")
    questions, installed = [], []
    declined = dependencies.ensure_dependencies(requirements, torch_utils=_TorchUtils(True),
                                                confirm=lambda q: questions.append(q) or False,
                                                install=installed.append)
    assert declined is False and installed == [] and "surely-not-installed-pkg>=1" in questions[0]
    with pytest.raises(dependencies.DependenciesMissing, match="did not succeed"):
        dependencies.ensure_dependencies(requirements, torch_utils=_TorchUtils(True), confirm=lambda q: True,
                                         install=installed.append)
    assert installed == [["surely-not-installed-pkg>=1"]]
    torch_utils = _TorchUtils(False)
    assert dependencies.ensure_dependencies(requirements, torch_utils=torch_utils) is False
    assert torch_utils.install_calls == [f">={dependencies.MINIMUM_TORCH_VERSION}"]
    requirements.write_text("numpy>=1.0\n")
    assert dependencies.ensure_dependencies(requirements, testing=True, torch_utils=_TorchUtils(True)) is True

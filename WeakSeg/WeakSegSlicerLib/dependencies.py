"""The module's dependencies: which requirements (``Resources/requirements.txt``) are not installed
yet, and installing them on first use, after asking.

PyTorch comes from the PyTorch extension (SlicerPyTorch: it picks the build for the GPU and driver);
the other packages with ``slicer.packaging.pip_ensure`` (Slicer >= 5.11) or
``slicer.util.pip_install``.  In testing mode nothing is installed (``pip_ensure`` skips installs
there, and a test must not change the environment): a missing dependency raises
:class:`DependenciesMissing`, which the self-test turns into a skip with that message.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

logger = logging.getLogger(__name__)

MINIMUM_TORCH_VERSION = "2.1"


class DependenciesMissing(RuntimeError):
    """A dependency is missing and cannot be installed now (testing mode, no PyTorch extension)."""


def missing_requirements(lines: Iterable[str]) -> list[str]:
    """Requirement lines (``name>=x.y``, PEP 508) that are not installed at a satisfying version.

    Comments, blank lines and pip options (``-r``, ``--index-url``...) are skipped; a requirement whose
    environment marker does not apply here is not needed.  A line that is not a valid requirement is
    reported as missing, as written (without its comment).
    """
    missing = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            missing.append(line)
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing


def _quoted(requirement: str) -> str:
    return f'"{requirement}"' if any(c in requirement for c in "<>;") else requirement


def ensure_dependencies(requirements_path: str | Path, ask_confirmation: bool = True, testing: bool = False,
                        torch_utils=None, confirm: Callable[[str], bool] | None = None,
                        install: Callable[[list[str]], None] | None = None) -> bool:
    """Install what the worker needs, on first use only, after asking.  False if the user declines.

    ``testing``: Slicer's testing mode; nothing is installed and a missing package raises
    :class:`DependenciesMissing`.  ``torch_utils`` (the PyTorch extension's ``PyTorchUtils`` module),
    ``confirm`` (a question -> bool) and ``install`` (requirement lines -> None) default to Slicer's.
    """
    if torch_utils is None:
        try:
            import PyTorchUtils as torch_utils
        except ModuleNotFoundError:
            raise DependenciesMissing("WeakSeg needs the PyTorch extension. Install 'PyTorch' from the Extensions "
                                      "Manager and restart Slicer.") from None
    torch_logic = torch_utils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        if testing:
            raise DependenciesMissing("PyTorch is not installed and nothing is installed in testing mode: install it "
                                      "with the PyTorch extension (PyTorch Utils module) first.")
        torch = torch_logic.installTorch(askConfirmation=ask_confirmation,
                                         torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
        if torch is None:
            return False
    lines = Path(requirements_path).read_text().splitlines()
    missing = missing_requirements(lines)
    if not missing:
        return True
    if testing:
        raise DependenciesMissing(f"Python packages {', '.join(missing)} are missing and nothing is installed in "
                                  f"testing mode: install them first (pip_install in Slicer's Python console).")
    if confirm is None:
        import slicer

        def confirm(question: str) -> bool:
            return bool(slicer.util.confirmOkCancelDisplay(question, windowTitle="WeakSeg"))
    if ask_confirmation and not confirm(f"WeakSeg needs these Python packages: {', '.join(missing)}.\n"
                                        f"Install them now? This may take a few minutes."):
        return False
    if install is None:
        install = _slicer_install
    install(missing)
    still = missing_requirements(lines)
    if still:
        raise DependenciesMissing(f"Installing {', '.join(still)} did not succeed; see the Python console.")
    return True


def _slicer_install(requirements: list[str]) -> None:
    """Install with ``slicer.packaging.pip_ensure`` (already confirmed, so no second prompt) or
    ``slicer.util.pip_install`` on older Slicer."""
    import slicer

    try:
        import slicer.packaging as packaging
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(requirements, requester="WeakSeg", prompt_install=False)
    else:
        slicer.util.pip_install(" ".join(_quoted(r) for r in requirements))

"""Which of the module's requirements (``Resources/requirements.txt``) are not installed yet."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement


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

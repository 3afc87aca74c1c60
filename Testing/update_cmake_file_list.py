"""Regenerate the Python file lists in WeakSeg/CMakeLists.txt from the files on disk.

Slicer's packaging copies only the files CMake lists; a Python file missing from the list is
silently missing from the Extensions Manager package.  Run this after adding or removing files in
WeakSegLib/ or WeakSeg/WeakSegSlicerLib/::

    python Testing/update_cmake_file_list.py          # rewrite the lists
    python Testing/update_cmake_file_list.py --check  # exit 1 (and say what differs) if out of date

It rewrites only the lines between marker comments ``# BEGIN <package> <kind>`` / ``# END <package>
<kind>``:

* ``WeakSegLib files`` (Python files) and ``WeakSegLib resources`` (data files shipped inside the
  package: .json, .yaml, .yml, .txt, .csv), paths relative to the repository root;
* ``WeakSegSlicerLib files`` (the module's GUI-side helpers, in MODULE_PYTHON_SCRIPTS), paths
  relative to WeakSeg/.

Entries are sorted, ``__pycache__`` and build folders skipped.  ``Testing/test_cmake_lists.py`` runs
``--check``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMAKE_FILE = ROOT / "WeakSeg" / "CMakeLists.txt"
PACKAGE = "WeakSegLib"
SLICER_PACKAGE = "WeakSegSlicerLib"
MODULE_DIR = "WeakSeg"  # the Slicer module folder, relative to the repository root
RESOURCE_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".csv")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def _files(base: Path, package: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files ``base/package/**`` ending in ``suffixes``, relative to ``base``, sorted."""
    found = []
    for path in (base / package).rglob("*"):
        rel = path.relative_to(base)
        if not path.is_file() or any(p in SKIPPED_PARTS or p.endswith(".egg-info") for p in rel.parts):
            continue
        if path.name.startswith(".") or not path.name.endswith(suffixes):
            continue
        found.append(rel.as_posix())
    return sorted(found)


def python_files(root: Path = ROOT) -> list[str]:
    """Every ``WeakSegLib/**/*.py`` on disk, relative to the repository root."""
    return _files(root, PACKAGE, (".py",))


def resource_files(root: Path = ROOT) -> list[str]:
    """Data files inside the package that must be installed with it."""
    return _files(root, PACKAGE, RESOURCE_SUFFIXES)


def slicer_python_files(root: Path = ROOT) -> list[str]:
    """Every ``WeakSeg/WeakSegSlicerLib/**/*.py`` on disk, relative to ``WeakSeg/``."""
    return _files(root / MODULE_DIR, SLICER_PACKAGE, (".py",))


def blocks(root: Path = ROOT) -> list[tuple[str, str, list[str]]]:
    """``(package, kind, entries on disk)`` of every generated block."""
    return [(PACKAGE, "files", python_files(root)), (PACKAGE, "resources", resource_files(root)),
            (SLICER_PACKAGE, "files", slicer_python_files(root))]


def _block_pattern(kind: str, package: str = PACKAGE) -> re.Pattern:
    return re.compile(rf"(?P<begin>^(?P<indent>[ \t]*)# BEGIN {package} {kind}[^\n]*\n)(?P<body>.*?)"
                      rf"(?P<end>^[ \t]*# END {package} {kind}[^\n]*$)", re.M | re.S)


def _match(text: str, kind: str, package: str) -> re.Match:
    match = _block_pattern(kind, package).search(text)
    if match is None:
        raise ValueError(f"{CMAKE_FILE} has no '# BEGIN {package} {kind}' ... '# END {package} {kind}' block.")
    return match


def listed(text: str, kind: str, package: str = PACKAGE) -> list[str]:
    """The entries currently between the markers of ``package`` and ``kind`` ("files" or "resources")."""
    return [line.strip() for line in _match(text, kind, package).group("body").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def regenerate(text: str, root: Path = ROOT) -> str:
    """``text`` with every block replaced by the files on disk."""
    for package, kind, entries in blocks(root):
        match = _match(text, kind, package)
        body = "".join(f"{match.group('indent')}{entry}\n" for entry in entries)
        text = text[:match.start("body")] + body + text[match.end("body"):]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the lists are out of date")
    args = parser.parse_args(argv)
    text = CMAKE_FILE.read_text()
    new = regenerate(text)
    if new == text:
        print(f"{CMAKE_FILE.relative_to(ROOT)} lists all {len(python_files())} {PACKAGE} and "
              f"{len(slicer_python_files())} {SLICER_PACKAGE} Python files.")
        return 0
    if args.check:
        for package, kind, on_disk in blocks():
            present = listed(text, kind, package)
            missing = sorted(set(on_disk) - set(present))
            stale = sorted(set(present) - set(on_disk))
            if missing:
                print(f"Not listed in {CMAKE_FILE.relative_to(ROOT)} ({package} {kind}): {', '.join(missing)}")
            if stale:
                print(f"Listed but not on disk ({package} {kind}): {', '.join(stale)}")
            if not missing and not stale and present != on_disk:
                print(f"The {package} {kind} list is not sorted.")
        print("Run: python Testing/update_cmake_file_list.py")
        return 1
    CMAKE_FILE.write_text(new)
    print(f"Updated {CMAKE_FILE.relative_to(ROOT)}: {len(python_files())} {PACKAGE} Python files, "
          f"{len(resource_files())} resources, {len(slicer_python_files())} {SLICER_PACKAGE} Python files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the WeakSegLib file lists in WeakSeg/CMakeLists.txt from the files on disk.

Slicer's packaging copies only the files CMake lists; a Python file missing from the list is
silently missing from the Extensions Manager package.  Run this after adding or removing files in
WeakSegLib/::

    python Testing/update_cmake_file_list.py          # rewrite the lists
    python Testing/update_cmake_file_list.py --check  # exit 1 (and say what differs) if out of date

It rewrites only the lines between the marker comments ``# BEGIN WeakSegLib files`` / ``# END
WeakSegLib files`` (Python files) and ``# BEGIN WeakSegLib resources`` / ``# END WeakSegLib
resources`` (data files shipped inside the package: .json, .yaml, .yml, .txt, .csv).  Paths are
relative to the repository root, sorted, ``__pycache__`` and build folders skipped.
``Testing/test_cmake_lists.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMAKE_FILE = ROOT / "WeakSeg" / "CMakeLists.txt"
PACKAGE = "WeakSegLib"
RESOURCE_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".csv")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def _files(root: Path, suffixes: tuple[str, ...]) -> list[str]:
    package = root / PACKAGE
    found = []
    for path in package.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or any(p in SKIPPED_PARTS or p.endswith(".egg-info") for p in rel.parts):
            continue
        if path.name.startswith(".") or not path.name.endswith(suffixes):
            continue
        found.append(rel.as_posix())
    return sorted(found)


def python_files(root: Path = ROOT) -> list[str]:
    """Every ``WeakSegLib/**/*.py`` on disk, relative to the repository root."""
    return _files(root, (".py",))


def resource_files(root: Path = ROOT) -> list[str]:
    """Data files inside the package that must be installed with it."""
    return _files(root, RESOURCE_SUFFIXES)


def _block_pattern(kind: str) -> re.Pattern:
    return re.compile(rf"(?P<begin>^(?P<indent>[ \t]*)# BEGIN WeakSegLib {kind}[^\n]*\n)(?P<body>.*?)"
                      rf"(?P<end>^[ \t]*# END WeakSegLib {kind}[^\n]*$)", re.M | re.S)


def listed(text: str, kind: str) -> list[str]:
    """The entries currently between the markers of ``kind`` ("files" or "resources")."""
    match = _block_pattern(kind).search(text)
    if match is None:
        raise ValueError(f"{CMAKE_FILE} has no '# BEGIN WeakSegLib {kind}' ... '# END WeakSegLib {kind}' block.")
    return [line.strip() for line in match.group("body").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def regenerate(text: str, root: Path = ROOT) -> str:
    """``text`` with both blocks replaced by the files on disk."""
    for kind, entries in (("files", python_files(root)), ("resources", resource_files(root))):
        pattern = _block_pattern(kind)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"{CMAKE_FILE} has no '# BEGIN WeakSegLib {kind}' ... '# END WeakSegLib {kind}' block.")
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
        print(f"{CMAKE_FILE.relative_to(ROOT)} lists all {len(python_files())} WeakSegLib Python files.")
        return 0
    if args.check:
        for kind, on_disk in (("files", python_files()), ("resources", resource_files())):
            present = listed(text, kind)
            missing = sorted(set(on_disk) - set(present))
            stale = sorted(set(present) - set(on_disk))
            if missing:
                print(f"Not listed in {CMAKE_FILE.relative_to(ROOT)} ({kind}): {', '.join(missing)}")
            if stale:
                print(f"Listed but not on disk ({kind}): {', '.join(stale)}")
            if not missing and not stale and present != on_disk:
                print(f"The {kind} list is not sorted.")
        print("Run: python Testing/update_cmake_file_list.py")
        return 1
    CMAKE_FILE.write_text(new)
    print(f"Updated {CMAKE_FILE.relative_to(ROOT)}: {len(python_files())} Python files, "
          f"{len(resource_files())} resources.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

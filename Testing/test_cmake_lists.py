"""Packaging checks of the Slicer extension: CMake lists every Python file (what CMake does not list
is silently missing from the Extensions Manager package), the extension description and icon are
valid, the module file has Slicer's layout, and the core library never imports Slicer, VTK or Qt."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_CMAKE = ROOT / "WeakSeg" / "CMakeLists.txt"
sys.path.insert(0, str(ROOT / "Testing"))
import update_cmake_file_list  # noqa: E402

SKIPPED = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def cmake_list(text: str, variable: str) -> list[str]:
    """Entries of ``set(VARIABLE ...)`` (comments dropped, ${MODULE_NAME} expanded)."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # CMake comments dropped
    match = re.search(rf"set\(\s*{variable}\b(.*?)\)", code, re.S)
    assert match, f"{variable} is not set in {MODULE_CMAKE}"
    return [e.replace("${MODULE_NAME}", "WeakSeg") for e in match.group(1).split()]


def files_on_disk(folder: Path, suffix: str) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob(f"*{suffix}")
            if p.is_file() and not (set(p.relative_to(folder).parts) & SKIPPED)}


@pytest.fixture(scope="module")
def cmake_text() -> str:
    return MODULE_CMAKE.read_text()


# ----------------------------------------------------------------------------------------------- CMake lists
def test_cmake_lists_every_weakseglib_python_file(cmake_text):
    listed = cmake_list(cmake_text, "WEAKSEGLIB_PYTHON_SCRIPTS")
    on_disk = {f"WeakSegLib/{p}" for p in files_on_disk(ROOT / "WeakSegLib", ".py")}
    missing = sorted(on_disk - set(listed))
    stale = sorted(set(listed) - on_disk)
    assert not missing, f"not in {MODULE_CMAKE.name}: {missing}. Run: python Testing/update_cmake_file_list.py"
    assert not stale, f"listed but not on disk: {stale}. Run: python Testing/update_cmake_file_list.py"
    assert len(listed) == len(set(listed)), "duplicate entries"
    assert "WeakSegLib/__init__.py" in listed and "WeakSegLib/mrml/__init__.py" in listed


def test_cmake_lists_every_slicer_helper_file(cmake_text):
    """The module's GUI-side helpers (WeakSeg/WeakSegSlicerLib) are listed, as generated, and exist."""
    listed = update_cmake_file_list.listed(cmake_text, "files", "WeakSegSlicerLib")
    on_disk = {f"WeakSegSlicerLib/{p}" for p in files_on_disk(ROOT / "WeakSeg" / "WeakSegSlicerLib", ".py")}
    missing = sorted(on_disk - set(listed))
    stale = sorted(set(listed) - on_disk)
    assert not missing, f"not in {MODULE_CMAKE.name}: {missing}. Run: python Testing/update_cmake_file_list.py"
    assert not stale, f"listed but not on disk: {stale}. Run: python Testing/update_cmake_file_list.py"
    assert listed == sorted(listed) and len(listed) == len(set(listed))
    assert "WeakSegSlicerLib/__init__.py" in listed and "WeakSegSlicerLib/sessions.py" in listed
    assert set(listed) <= set(cmake_list(cmake_text, "MODULE_PYTHON_SCRIPTS"))


def test_update_script_check_passes():
    result = subprocess.run([sys.executable, str(ROOT / "Testing" / "update_cmake_file_list.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_update_script_regenerates_the_block(cmake_text, tmp_path):
    """A new file in the package appears in the regenerated block; the rest of the file is untouched."""
    fake = tmp_path / "repo"
    (fake / "WeakSegLib" / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/new_thing.py", "table.json"):
        (fake / "WeakSegLib" / name).write_text("")
    (fake / "WeakSegLib" / "__pycache__").mkdir()
    (fake / "WeakSegLib" / "__pycache__" / "x.cpython-311.py").write_text("")
    (fake / "WeakSeg" / "WeakSegSlicerLib").mkdir(parents=True)
    for name in ("__init__.py", "sessions.py", "notes.txt"):
        (fake / "WeakSeg" / "WeakSegSlicerLib" / name).write_text("")
    new = update_cmake_file_list.regenerate(cmake_text, fake)
    assert update_cmake_file_list.listed(new, "files") == ["WeakSegLib/__init__.py", "WeakSegLib/sub/__init__.py",
                                                           "WeakSegLib/sub/new_thing.py"]
    assert update_cmake_file_list.listed(new, "resources") == ["WeakSegLib/table.json"]
    assert update_cmake_file_list.listed(new, "files", "WeakSegSlicerLib") == ["WeakSegSlicerLib/__init__.py",
                                                                               "WeakSegSlicerLib/sessions.py"]
    outside = lambda text: re.sub(r"# BEGIN WeakSeg\w*Lib.*?# END WeakSeg\w*Lib", "", text, flags=re.S)  # noqa: E731
    assert outside(new) == outside(cmake_text)
    assert update_cmake_file_list.regenerate(new, fake) == new


def test_cmake_lists_every_module_file(cmake_text):
    """Every file of WeakSeg/ (Python or resource) is listed, and every listed file exists."""
    scripts = cmake_list(cmake_text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(cmake_text, "MODULE_PYTHON_RESOURCES")
    module_dir = ROOT / "WeakSeg"
    python_on_disk = files_on_disk(module_dir, ".py")
    assert python_on_disk <= set(scripts) | set(resources), \
        f"Python files of WeakSeg/ not in CMake: {sorted(python_on_disk - set(scripts) - set(resources))}"
    for entry in scripts + resources:
        assert (module_dir / entry).is_file(), f"{entry} is listed in {MODULE_CMAKE.name} but does not exist"
    for required in ("WeakSeg.py", "SegmentEditorWeakAnnotationLib/SegmentEditorEffect.py"):
        assert required in scripts
    for required in ("Resources/Icons/WeakSeg.png", "Resources/UI/WeakSeg.ui", "Resources/requirements.txt"):
        assert required in resources
    non_python = {p.relative_to(module_dir).as_posix() for p in module_dir.rglob("*")
                  if p.is_file() and p.suffix != ".py" and p.name != "CMakeLists.txt"
                  and not (set(p.relative_to(module_dir).parts) & SKIPPED)}
    assert non_python <= set(resources), f"files of WeakSeg/ not installed: {sorted(non_python - set(resources))}"


def test_cmake_builds_module_library_and_test(cmake_text):
    top = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key}\s+\S", top), f"{key} missing in CMakeLists.txt"
    assert re.search(r'set\(EXTENSION_CATEGORY\s+"Segmentation"\)', top)
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', top)
    assert "find_package(Slicer REQUIRED)" in top and "add_subdirectory(WeakSeg)" in top
    assert "Slicer_EXTENSION_CPACK" in top
    assert "slicerMacroBuildScriptedModule(" in cmake_text
    assert re.search(r"ctkMacroCompilePythonScript\(.*?SCRIPTS \"\$\{WEAKSEGLIB_PYTHON_SCRIPTS\}\".*?"
                     r"SOURCE_DIR \$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\.", cmake_text, re.S)
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", cmake_text,
                     re.S)


# ----------------------------------------------------------------------------------------------- description
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                "dicom_support_rule", "build_subdirectory", "enabled", "tier"}  # schema v1.0.2 (no extra keys)


def test_extension_description_json():
    data = json.loads((ROOT / "WeakSeg.json").read_text())
    assert {"$schema", "category", "scm_url"} <= set(data), "required by the Extensions Index schema"
    assert set(data) <= CATALOG_KEYS, f"keys the Extensions Index schema refuses: {sorted(set(data) - CATALOG_KEYS)}"
    assert "slicer-extension-catalog-entry-schema" in data["$schema"]
    assert data["category"] == "Segmentation"
    assert data["build_dependencies"] == ["PyTorch"]
    assert data["scm_url"].startswith("https://github.com/") and data["scm_url"].endswith(".git")
    assert isinstance(data.get("tier", 1), int) and 1 <= data.get("tier", 1) <= 5
    top = (ROOT / "CMakeLists.txt").read_text()
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE\s+"([^"]+)"\)', top).group(1)
    assert data["scm_url"].removesuffix(".git") == homepage
    icon_url = re.search(r'set\(EXTENSION_ICONURL\s+"([^"]+)"\)', top).group(1)
    assert icon_url.endswith("/WeakSeg.png") and icon_url.startswith("https://")
    screenshots = re.search(r'set\(EXTENSION_SCREENSHOTURLS\s+"([^"]+)"\)', top).group(1).split()
    assert screenshots and all(u.startswith("https://") for u in screenshots)


def _png_size(path: Path) -> tuple[int, int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width, height, data[25]  # colour type 6 = RGBA


def test_icons():
    assert _png_size(ROOT / "WeakSeg.png") == (128, 128, 6)
    module_icon = ROOT / "WeakSeg" / "Resources" / "Icons" / "WeakSeg.png"
    assert module_icon.read_bytes() == (ROOT / "WeakSeg.png").read_bytes()
    effect_icon = ROOT / "WeakSeg" / "SegmentEditorWeakAnnotationLib" / "SegmentEditorEffect.png"
    assert _png_size(effect_icon)[:2] == (64, 64)
    assert (ROOT / "WeakSeg" / "Resources" / "Icons" / "make_icon.py").is_file()


def test_requirements_have_lower_bounds_and_no_torch():
    lines = [ln.strip() for ln in (ROOT / "WeakSeg" / "Resources" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    names = {re.split(r"[<>=!~\[ ]", ln)[0].lower() for ln in lines}
    assert {"monai", "simpleitk", "scipy"} <= names
    assert "torch" not in names, "torch comes from the PyTorch extension"
    assert all(">=" in ln for ln in lines)


# ----------------------------------------------------------------------------------------------- module layout
def test_module_file_has_slicer_layout():
    source = (ROOT / "WeakSeg" / "WeakSeg.py").read_text()
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for name in ("WeakSeg", "WeakSegParameterNode", "WeakSegWidget", "WeakSegLogic", "WeakSegTest"):
        assert name in classes, f"WeakSeg.py has no class {name}"
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["WeakSeg"] == ["ScriptedLoadableModule"]
    assert bases["WeakSegWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["WeakSegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["WeakSegTest"] == ["ScriptedLoadableModuleTest"]
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in classes["WeakSegParameterNode"].decorator_list)
    assert "from slicer.i18n import tr as _" in source
    assert 'startupCompleted()' in source, "the Segment Editor effect is registered at startup"
    test_methods = [n.name for n in classes["WeakSegTest"].body if isinstance(n, ast.FunctionDef)]
    assert "runTest" in test_methods and any(m.startswith("test_") for m in test_methods)
    assert "skip" not in " ".join(test_methods).lower()
    # Packages are never installed at import time: pip calls only inside functions.
    for node in tree.body:
        if isinstance(node, (ast.Expr, ast.Assign)):
            assert "pip_" not in ast.unparse(node) and "installTorch" not in ast.unparse(node)


def test_effect_file_follows_scripted_effect_conventions():
    source = (ROOT / "WeakSeg" / "SegmentEditorWeakAnnotationLib" / "SegmentEditorEffect.py").read_text()
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert "SegmentEditorEffect" in classes
    assert [ast.unparse(b) for b in classes["SegmentEditorEffect"].bases] == [
        "AbstractScriptedSegmentEditorAutoCompleteEffect"]
    methods = {n.name for n in classes["SegmentEditorEffect"].body if isinstance(n, ast.FunctionDef)}
    assert {"clone", "icon", "helpText", "setupOptionsFrame", "computePreviewLabelmap", "onPreview"} <= methods


def test_ui_file_is_valid_designer_xml():
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "WeakSeg" / "Resources" / "UI" / "WeakSeg.ui").getroot()
    assert root.tag == "ui"
    names = {w.get("name") for w in root.iter("widget")}
    for name in ("casesTable", "classesTable", "minutesSpinBox", "deviceComboBox", "trainButton", "cancelButton",
                 "segmentButton", "saveModelButton", "loadModelButton", "progressBar", "statusLabel"):
        assert name in names, f"{name} missing from WeakSeg.ui"
    source = (ROOT / "WeakSeg" / "WeakSeg.py").read_text()
    assert 'resourcePath("UI/WeakSeg.ui")' in source


# ----------------------------------------------------------------------------------------------- purity
FORBIDDEN = ("slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt", "__main__qt")

PURITY_SCRIPT = """
import importlib, json, pathlib, sys
import WeakSegLib
package = pathlib.Path(WeakSegLib.__file__).parent
# Module names from the files (pkgutil.walk_packages would import the mrml package to walk into it).
names = sorted(".".join(("WeakSegLib", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
               for p in package.rglob("*.py") if "__pycache__" not in p.parts)
failed, imported = {}, []
for name in names:
    if name == "WeakSegLib.mrml" or name.startswith("WeakSegLib.mrml.") or name == "WeakSegLib.__main__":
        continue
    try:
        importlib.import_module(name)
        imported.append(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print(json.dumps({"imported": imported, "failed": failed, "forbidden": forbidden}))
"""


def test_core_is_pure():
    """Importing every WeakSegLib module except mrml never imports slicer, vtk, qt or ctk."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    script = f"FORBIDDEN = {FORBIDDEN!r}\n" + PURITY_SCRIPT
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["failed"], f"modules that do not import: {report['failed']}"
    assert "WeakSegLib.data.annotation" in report["imported"] and "WeakSegLib.data.volume" in report["imported"]
    assert not report["forbidden"], f"the core imported {report['forbidden']}"


def test_package_init_does_not_import_mrml():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    code = "import sys, WeakSegLib; print('WeakSegLib.mrml' in sys.modules, 'slicer' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]

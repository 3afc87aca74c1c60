"""Extension Index readiness: WeakSeg.json against the catalog entry schema, the checks of the Extension
Index (scripts/check_description_files.py of Slicer/ExtensionsIndex), the license file, and every URL of
the top-level CMakeLists.txt real or clearly marked as a placeholder.

The schema's fields are written out here (Slicer/Slicer: Schemas/slicer-extension-catalog-entry-schema-
v1.0.2.json) because the test runs without network access."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION = ROOT / "WeakSeg.json"
SCHEMA_URL = re.compile(r"^https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.[0-2]\.json#?$")
# property -> (JSON type, extra check)
SCHEMA_PROPERTIES = {
    "$schema": (str, None),
    "category": (str, None),
    "scm_url": (str, None),
    "scm_revision": (str, None),
    "scm_type": (str, lambda v: v in ("git", "local")),
    "build_dependencies": (list, lambda v: all(isinstance(x, str) for x in v)),
    "dicom_support_rule": (str, None),
    "build_subdirectory": (str, None),
    "enabled": (bool, None),
    "tier": (int, lambda v: not isinstance(v, bool) and 1 <= v <= 5),
}
REQUIRED = ("$schema", "category", "scm_url")
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality",
}
PLACEHOLDER_REPOSITORY = "github.com/weakseg/SlicerWeakSeg"


def _description() -> dict:
    return json.loads(DESCRIPTION.read_text(encoding="utf-8"))


def _cmake() -> str:
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def _cmake_value(name: str) -> str:
    match = re.search(rf'set\s*\({name}\s*"([^"]*)"\s*\)', _cmake())
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1)


def test_description_matches_the_catalog_schema():
    raw = DESCRIPTION.read_bytes()
    assert b"\r" not in raw, "LF line endings only"
    description = _description()
    for key in REQUIRED:
        assert description.get(key), f"'{key}' is required"
    for key, value in description.items():
        assert key in SCHEMA_PROPERTIES, f"'{key}' is not a property of the schema (additionalProperties: false)"
        kind, check = SCHEMA_PROPERTIES[key]
        assert isinstance(value, kind), f"'{key}' must be a {kind.__name__}"
        assert check is None or check(value), f"'{key}' has an invalid value {value!r}"
    assert SCHEMA_URL.match(description["$schema"]), description["$schema"]


def test_description_passes_the_extension_index_checks():
    description = _description()
    name = DESCRIPTION.stem
    assert description["category"] in ACCEPTED_CATEGORIES
    assert description["category"] == _cmake_value("EXTENSION_CATEGORY")
    url = urllib.parse.urlsplit(description["scm_url"])
    assert url.scheme in ("git", "https") and url.netloc and url.path
    repository = Path(url.path.strip("/")).stem
    assert repository.startswith("Slicer") and not name.lower().startswith("slicer")
    assert re.search(r"project\s*\(\s*([^\s)]+)", _cmake()).group(1) == name
    assert description.get("build_dependencies", []) == _cmake_value("EXTENSION_DEPENDS").split()


def test_license_file_is_the_declared_license():
    license_text = (ROOT / "LICENSE.txt").read_text(encoding="utf-8")
    declared = re.search(r'^license\s*=\s*\{\s*text\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared and declared.group(1) == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in license_text


def test_every_url_is_real_or_clearly_marked():
    cmake = _cmake()
    comments = "\n".join(line for line in cmake.splitlines() if line.lstrip().startswith("#"))
    urls = re.findall(r"https?://[^\s\")]+", "\n".join(line for line in cmake.splitlines()
                                                       if not line.lstrip().startswith("#")))
    urls += [_description()["scm_url"]]
    assert urls
    for url in urls:
        if PLACEHOLDER_REPOSITORY not in url:
            continue  # another site: not ours to publish
        assert "PLACEHOLDER" in comments and PLACEHOLDER_REPOSITORY in comments
        raw = re.match(r"https://raw\.githubusercontent\.com/weakseg/SlicerWeakSeg/main/(.+)$", url)
        if raw and not (ROOT / raw.group(1)).is_file():
            assert raw.group(1).split("/")[0] in comments, f"{url}: the file is neither here nor marked missing"
    assert (ROOT / "WeakSeg.png").is_file()
    assert _cmake_value("EXTENSION_ICONURL").endswith("/WeakSeg.png")

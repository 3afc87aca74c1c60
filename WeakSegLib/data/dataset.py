"""Cases and datasets: a folder plus ``dataset.json``.

``dataset.json``::

    {
      "name": "ACDC",
      "classes": [{"id": 0, "name": "Background", "color": [0, 0, 0]},
                  {"id": 1, "name": "RV", "color": [...]}, ...],
      "channels": ["cine-MRI"],
      "modality": "MR",                      # "CT" switches on CT windowing in preprocessing
      "unannotated_value": 4,                # value of unannotated voxels in annotation files
      "priors": {"class_ratio": [0.9, 0.03, 0.04, 0.03]},
      "cases": [{"id": "patient001_frame01",
                 "image": "patient001_frame01.nii.gz",          # or a list of channel files
                 "annotation": "patient001_frame01_scribble.nii.gz",   # optional
                 "sidecar": "patient001_frame01.json",           # optional tags/sizes/boxes/points
                 "ground_truth": "patient001_frame01_gt.nii.gz", # optional, evaluation only
                 "group": "patient001"}]                          # optional: split unit (patient)
    }

Paths are relative to the folder holding ``dataset.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from WeakSegLib.data.annotation import WeakAnnotation
from WeakSegLib.data.datasets import folder_manifest
from WeakSegLib.data.volume import Volume, check_same_geometry, read_label_map, read_volume
from WeakSegLib.utils import atomic_write_json, describe_value, is_integer, read_json_object

logger = logging.getLogger(__name__)

DEFAULT_COLORS = [
    (0, 0, 0), (216, 101, 79), (128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210),
    (220, 245, 20), (230, 220, 70), (183, 156, 220), (183, 214, 211), (152, 189, 207),
]


@dataclass
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "color": list(self.color)}


def default_classes(names: Sequence[str]) -> list[ClassInfo]:
    """Class list from names (the first is background), with Slicer-like default colours."""
    return [ClassInfo(i, n, DEFAULT_COLORS[i % len(DEFAULT_COLORS)]) for i, n in enumerate(names)]


@dataclass
class Case:
    """One volume with its optional weak annotation and optional ground truth (evaluation only)."""

    id: str
    image: Volume
    annotation: WeakAnnotation | None = None
    ground_truth: Volume | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        self.image.check_finite(f"image of case '{self.id}'")
        if self.annotation is not None:
            check_same_geometry(self.image.geometry, self.annotation.geometry,
                                f"image of case '{self.id}'", f"annotation of case '{self.id}'")
        if self.ground_truth is not None:
            check_same_geometry(self.image.geometry, self.ground_truth.geometry,
                                f"image of case '{self.id}'", f"ground truth of case '{self.id}'")
        if self.group is None:
            self.group = self.id

    @property
    def is_labelled(self) -> bool:
        return self.annotation is not None


@dataclass
class Dataset:
    """Cases plus class names/colours, channel names and dataset-level priors."""

    classes: list[ClassInfo]
    cases: list[Case] = field(default_factory=list)
    channels: list[str] = field(default_factory=lambda: ["image"])
    modality: str = "MR"
    priors: dict = field(default_factory=dict)
    name: str = "dataset"
    root: Path | None = None

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"Class ids must be 0..K without gaps (0 = background), got {ids}.")
        seen: set[str] = set()
        for case in self.cases:
            if case.id in seen:
                raise ValueError(f"Two cases of dataset '{self.name}' have the id '{case.id}'; every case needs "
                                 f"its own id.")
            seen.add(case.id)
        ratio = self.priors.get("class_ratio")
        if ratio is not None:
            ratio = np.asarray(ratio, float)
            if ratio.shape != (len(self.classes),) or np.any(ratio < 0) or ratio.sum() <= 0:
                raise ValueError(f"priors.class_ratio must hold {len(self.classes)} non-negative values "
                                 f"(one per class, background first), got {ratio.tolist()}.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    def __getitem__(self, key: int | str) -> Case:
        if isinstance(key, str):
            for case in self.cases:
                if case.id == key:
                    return case
            raise KeyError(f"No case with id '{key}' in dataset '{self.name}'.")
        return self.cases[key]

    def subset(self, ids: Sequence[str]) -> Dataset:
        wanted = set(ids)
        return Dataset(self.classes, [c for c in self.cases if c.id in wanted], self.channels, self.modality,
                       dict(self.priors), self.name, self.root)

    def split_by_group(self, groups_a: Sequence[str]) -> tuple[Dataset, Dataset]:
        """Split into (cases whose group is in ``groups_a``, the others) — e.g. by patient."""
        a = set(groups_a)
        return (self.subset([c.id for c in self.cases if c.group in a]),
                self.subset([c.id for c in self.cases if c.group not in a]))

    def groups(self) -> list[str]:
        return sorted({c.group for c in self.cases})

    def annotated_fraction(self) -> float:
        """Fraction of annotated voxels over all annotated cases (voxel labels only)."""
        total = annotated = 0
        for case in self.cases:
            if case.annotation is not None:
                total += int(np.prod(case.image.shape))
                annotated += case.annotation.num_annotated_voxels()
        return annotated / total if total else 0.0

    def manifest(self) -> dict:
        return {"name": self.name, "classes": [c.to_dict() for c in self.classes], "channels": self.channels,
                "modality": self.modality, "priors": self.priors}


def _resolve(root: Path, entry: str | list[str]) -> Path | list[Path]:
    if isinstance(entry, list):
        return [root / e for e in entry]
    return root / entry


def load_manifest(path: str | os.PathLike) -> tuple[dict, Path]:
    """``(manifest, root)`` of a dataset: a folder with ``dataset.json``, that file itself, or a folder in a
    known public layout without one (ACDC, LA: :mod:`WeakSegLib.data.datasets`).  Paths in the manifest
    are relative to ``root``."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset.json").exists():
            return _read_json(path / "dataset.json"), path
        manifest = folder_manifest(path)
        if manifest is None:
            raise FileNotFoundError(
                f"'{path}' has no dataset.json and is neither an ACDC nor an LA folder. Write one (see "
                f"WeakSegLib.data.dataset for the format) or point to such a folder.")
        return manifest, path
    if not path.exists():
        raise FileNotFoundError(f"Dataset '{path}' does not exist (give a dataset folder or its dataset.json).")
    if not path.name.lower().endswith(".json"):
        raise ValueError(f"'{path}' is not a dataset; give a dataset folder or its dataset.json.")
    return _read_json(path), path.parent


def _read_json(path: Path) -> dict:
    return read_json_object(path, f"Dataset file '{path}'")


def load_dataset(path: str | os.PathLike, with_annotations: bool = True, with_ground_truth: bool = True,
                 case_filter: Callable[[dict], bool] | None = None) -> Dataset:
    """Load a dataset folder (or its ``dataset.json``), see :func:`load_manifest`.

    A folder without ``dataset.json`` in the ACDC or LA layout is read as such — so
    ``load_dataset("../shared/data/acdc")`` is all it takes.  What the data cannot teach (see
    :func:`plausibility_warnings`) is logged as warnings.
    """
    manifest, root = load_manifest(path)
    name = f"Dataset file '{root / 'dataset.json'}'" if (root / "dataset.json").exists() else f"Dataset '{root}'"
    dataset = dataset_from_manifest(manifest, root, with_annotations, with_ground_truth, case_filter, source=name)
    for warning in plausibility_warnings(dataset):
        logger.warning("%s", warning)
    return dataset


def manifest_case_id(entry: dict) -> str:
    """The case id of a manifest entry: its ``id``, else the image file name without its extension."""
    image = entry.get("image")
    if isinstance(image, list):
        image = image[0] if image else None
    if not entry.get("id") and not isinstance(image, str):
        raise ValueError("A case has neither an 'id' nor an 'image' file name.")
    return str(entry.get("id") or Path(image).name.split(".")[0])


_OPTIONAL_FILES = ("annotation", "sidecar", "ground_truth")


def check_manifest(manifest: dict, source: str = "dataset.json") -> None:
    """Type-check a dataset manifest: one ``ValueError`` naming ``source``, the key and what was expected
    (also used for the worker's job datasets)."""
    def fail(where: str, expected: str, value) -> None:
        raise ValueError(f"{source}: {where} must be {expected}, got {describe_value(value)}.")

    for key in ("classes", "cases"):
        if key not in manifest:
            raise ValueError(f"{source} has no '{key}' entry (see WeakSegLib.data.dataset for the format).")
    classes = manifest["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        fail("'classes'", "a list of at least 2 classes (background first)", classes)
    for i, c in enumerate(classes):
        if not isinstance(c, dict):
            fail(f"classes[{i}]", 'an object {"id": 1, "name": "RV"}', c)
        if not is_integer(c.get("id")):
            fail(f"classes[{i}].id", "an integer", c.get("id"))
        if not isinstance(c.get("name"), str) or not c["name"].strip():
            fail(f"classes[{i}].name", "a non-empty string", c.get("name"))
        color = c.get("color", [0, 0, 0])
        if not (isinstance(color, list) and len(color) == 3 and all(is_integer(v) and 0 <= v <= 255 for v in color)):
            fail(f"classes[{i}].color", "a list of 3 integers 0..255", color)
    cases = manifest["cases"]
    if not isinstance(cases, list):
        fail("'cases'", "a list of case objects", cases)
    for key, check, expected in (
            ("unannotated_value", is_integer, "an integer (the label value of unannotated voxels, -1 by default; "
                                              "ACDC uses 4)"),
            ("modality", lambda v: isinstance(v, str), 'a string such as "MR" or "CT"'),
            ("name", lambda v: isinstance(v, str), "a string"),
            ("priors", lambda v: isinstance(v, dict), "an object"),
            ("channels", lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
             "a non-empty list of channel names")):
        if key in manifest and not check(manifest[key]):
            fail(f"'{key}'", expected, manifest[key])
    ids: dict[str, int] = {}
    for i, entry in enumerate(cases):
        if not isinstance(entry, dict):
            fail(f"cases[{i}]", 'an object {"id": ..., "image": ...}', entry)
        label = f"cases[{i}]" + (f" ('{entry['id']}')" if isinstance(entry.get("id"), str) else "")
        if "image" not in entry:
            raise ValueError(f"{source}: {label} has no 'image' (the image file of the case, relative to the "
                             f"dataset folder).")
        image = entry["image"]
        if not (isinstance(image, str) and image) and not (
                isinstance(image, list) and image and all(isinstance(x, str) and x for x in image)):
            fail(f"{label}.image", "a file name or a list of file names (one per channel)", image)
        if "id" in entry and not isinstance(entry["id"], (str, int)) or isinstance(entry.get("id"), bool):
            fail(f"{label}.id", "a string", entry["id"])
        for key in _OPTIONAL_FILES:
            if entry.get(key) is not None and not (isinstance(entry[key], str) and entry[key]):
                fail(f"{label}.{key}", "a file name", entry[key])
        if "group" in entry and not isinstance(entry["group"], (str, int)) or isinstance(entry.get("group"), bool):
            fail(f"{label}.group", "a string", entry["group"])
        complete = entry.get("complete_classes", [])
        if not isinstance(complete, list) or not all(is_integer(c) for c in complete):
            fail(f"{label}.complete_classes", "a list of class ids", complete)
        cid = manifest_case_id(entry)
        if cid in ids:
            raise ValueError(f"{source}: cases[{ids[cid]}] and cases[{i}] have the same id '{cid}'; every case "
                             f"needs its own id (results and splits are keyed by it).")
        ids[cid] = i


def dataset_from_manifest(manifest: dict, root: Path, with_annotations: bool = True,
                          with_ground_truth: bool = True,
                          case_filter: Callable[[dict], bool] | None = None,
                          source: str = "dataset.json") -> Dataset:
    check_manifest(manifest, source)
    classes = [ClassInfo(int(c["id"]), str(c["name"]), tuple(c.get("color", DEFAULT_COLORS[int(c["id"]) % 11])))
               for c in manifest["classes"]]
    num_classes = len(classes)
    unannotated = int(manifest.get("unannotated_value", -1))
    channels = list(manifest.get("channels", ["image"]))
    cases = []
    for entry in manifest["cases"]:
        if case_filter is not None and not case_filter(entry):
            continue
        cid = manifest_case_id(entry)
        if isinstance(entry["image"], list) and len(entry["image"]) != len(channels):
            raise ValueError(f"{source}: case '{cid}' lists {len(entry['image'])} image file(s) for "
                             f"{len(channels)} channel(s) {channels}.")
        image = read_volume(_resolve(root, entry["image"]), channels if isinstance(entry["image"], list) else None)
        annotation = None
        if with_annotations and (entry.get("annotation") or entry.get("sidecar")):
            labels = None
            if entry.get("annotation"):
                lab = read_label_map(root / entry["annotation"], f"annotation of case '{cid}'")
                check_same_geometry(image.geometry, lab.geometry, f"image of case '{cid}'",
                                    f"annotation of case '{cid}'")
                labels = lab.array
                if unannotated != -1:
                    labels = np.where(labels == unannotated, -1, labels)
            try:
                if entry.get("sidecar"):
                    annotation = WeakAnnotation.from_sidecar(root / entry["sidecar"], image.geometry, num_classes,
                                                             labels)
                else:
                    annotation = WeakAnnotation(image.geometry, num_classes, labels,
                                                complete_classes=frozenset(entry.get("complete_classes", [])))
            except ValueError as exc:
                raise type(exc)(f"Case '{cid}': {exc}") from None
        gt = None
        if with_ground_truth and entry.get("ground_truth"):
            gt = read_label_map(root / entry["ground_truth"], f"ground truth of case '{cid}'")
            bad = sorted({int(v) for v in np.unique(gt.array)} - set(range(num_classes)))
            if bad:
                raise ValueError(f"The ground truth of case '{cid}' holds label(s) {bad}; the dataset has classes "
                                 f"0..{num_classes - 1} ({', '.join(c.name for c in classes)}).")
            gt = gt.with_array(gt.array.astype(np.int16))
        group = entry.get("group")
        cases.append(Case(cid, image, annotation, gt, None if group is None else str(group)))
    return Dataset(classes, cases, channels, manifest.get("modality", "MR"), dict(manifest.get("priors", {})),
                   manifest.get("name", root.name), root)


def check_network_fits(dataset: Dataset) -> None:
    """``ValueError`` naming the first case too small for the network: it needs at least
    :data:`~WeakSegLib.config.MIN_EXTENT` voxels along y or x (it halves them twice)."""
    from WeakSegLib.config import MIN_EXTENT

    for case in dataset.cases:
        _, ny, nx = case.image.shape
        if max(ny, nx) < MIN_EXTENT:
            raise ValueError(f"The image of case '{case.id}' is {case.image.shape} voxels (z, y, x): too small for the "
                             f"network, which needs at least {MIN_EXTENT} voxels along y or x. Use larger images (or "
                             f"crop less).")


def plausibility_warnings(dataset: Dataset) -> list[str]:
    """What the annotations of ``dataset`` cannot teach, one sentence each (empty when all is well):
    voxel labels of one class only (scribbles of the object and none of the background, or the reverse)
    with nothing else to tell the classes apart."""
    warnings = []
    drawn: set[int] = set()
    other_information = False
    for case in dataset.cases:
        a = case.annotation
        if a is None:
            continue
        drawn |= a.drawn_classes()
        other_information |= bool(a.complete_classes or a.boxes or a.tags or a.slice_tags or a.size_ranges_ml
                                  or a.centroid_ranges_mm)
    if len(drawn) == 1 and not other_information:
        (only,) = drawn
        name = dataset.classes[only].name if only < len(dataset.classes) else str(only)
        others = [c.name for c in dataset.classes if c.id != only]
        warnings.append(
            f"Every voxel label of dataset '{dataset.name}' is class {only} ({name}): with nothing else to compare "
            f"it with, the model cannot learn where {name} ends and {', '.join(others)} begin(s) (it may predict "
            f"{name} everywhere). Draw scribbles of the other classes too (at least background).")
    return warnings


def write_manifest(manifest: dict, folder: str | os.PathLike) -> Path:
    return atomic_write_json(Path(folder) / "dataset.json", manifest)

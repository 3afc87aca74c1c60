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

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from WeakSegLib.data.annotation import WeakAnnotation
from WeakSegLib.data.datasets import folder_manifest
from WeakSegLib.data.volume import Volume, check_same_geometry, read_volume

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
    return _read_json(path), path.parent


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"'{path}' is not valid JSON: {exc}") from None


def load_dataset(path: str | os.PathLike, with_annotations: bool = True, with_ground_truth: bool = True,
                 case_filter: Callable[[dict], bool] | None = None) -> Dataset:
    """Load a dataset folder (or its ``dataset.json``), see :func:`load_manifest`.

    A folder without ``dataset.json`` in the ACDC or LA layout is read as such — so
    ``load_dataset("../shared/data/acdc")`` is all it takes.
    """
    manifest, root = load_manifest(path)
    return dataset_from_manifest(manifest, root, with_annotations, with_ground_truth, case_filter)


def manifest_case_id(entry: dict) -> str:
    """The case id of a manifest entry: its ``id``, else the image file name without its extension."""
    return str(entry.get("id") or Path(str(entry["image"])).name.split(".")[0])


def dataset_from_manifest(manifest: dict, root: Path, with_annotations: bool = True,
                          with_ground_truth: bool = True,
                          case_filter: Callable[[dict], bool] | None = None) -> Dataset:
    if "classes" not in manifest or "cases" not in manifest:
        raise ValueError("dataset.json needs 'classes' and 'cases' entries (see WeakSegLib.data.dataset).")
    classes = [ClassInfo(int(c["id"]), str(c["name"]), tuple(c.get("color", DEFAULT_COLORS[int(c["id"]) % 11])))
               for c in manifest["classes"]]
    num_classes = len(classes)
    unannotated = manifest.get("unannotated_value", -1)
    channels = list(manifest.get("channels", ["image"]))
    cases = []
    for entry in manifest["cases"]:
        if case_filter is not None and not case_filter(entry):
            continue
        cid = manifest_case_id(entry)
        image = read_volume(_resolve(root, entry["image"]), channels if isinstance(entry["image"], list) else None)
        annotation = None
        if with_annotations and (entry.get("annotation") or entry.get("sidecar")):
            labels = None
            if entry.get("annotation"):
                lab = read_volume(root / entry["annotation"])
                check_same_geometry(image.geometry, lab.geometry, f"image of case '{cid}'",
                                    f"annotation of case '{cid}'")
                labels = lab.array.astype(np.int16)
                if unannotated != -1:
                    labels[lab.array == unannotated] = -1
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
            gt = read_volume(root / entry["ground_truth"])
        cases.append(Case(cid, image, annotation, gt, entry.get("group")))
    return Dataset(classes, cases, channels, manifest.get("modality", "MR"), dict(manifest.get("priors", {})),
                   manifest.get("name", root.name), root)


def write_manifest(manifest: dict, folder: str | os.PathLike) -> Path:
    path = Path(folder) / "dataset.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path

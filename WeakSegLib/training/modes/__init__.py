"""Learning modes: plug-ins into the trainer's hooks (the loop itself never changes; the hooks are
described in :mod:`~WeakSegLib.training.modes.base`).  ``standard`` is the objective assembled from
the annotations alone; every other mode adds to it, so annotated volumes keep their terms.

=====================  =========================  ===========================================
mode                   family                     paper
=====================  =========================  ===========================================
standard               weak supervision           the annotation-driven objective alone
pi-model               semi-supervised            Laine & Aila, ICLR 2017
temporal-ensembling    semi-supervised            Laine & Aila, ICLR 2017
mean-teacher           semi-supervised            Tarvainen & Valpola, NeurIPS 2017
vat                    semi-supervised            Miyato et al., TPAMI 2019
entropy-min            semi-supervised            Grandvalet & Bengio, NeurIPS 2005
pseudo-label           semi-supervised            Lee, ICML-W 2013 (confidence threshold)
self-training          semi-supervised            Lee 2013; Bai et al., MICCAI 2017 (rounds)
fixmatch               semi-supervised            Sohn et al., NeurIPS 2020
mixmatch               semi-supervised            Berthelot et al., NeurIPS 2019
source-free            domain adaptation          Bateson et al., MICCAI 2020
smiler                 partial labels             Petit et al., DLMIA 2018
cam                    image tags                 Zhou et al., CVPR 2016
box-rounds             boxes                      Khoreva et al., CVPR 2017
=====================  =========================  ===========================================

Options come from ``TrainConfig.mode_options`` (a dict, e.g. ``{"decay": 0.999}``); each mode's
docstring lists its knobs with their defaults, and an unknown option is refused with the list of
valid ones.  "Budget fraction" means the fraction of the training budget (iterations when given,
else time), so schedules adapt to any budget.  All randomness comes from the sampler's seeded
generator, and every state a mode keeps is saved in the checkpoint (tensors and numbers only), so
a resumed run continues exactly.

Layout: :mod:`~WeakSegLib.training.modes.base` (the interface, option checking, shared helpers),
:mod:`~WeakSegLib.training.modes.consistency` and :mod:`~WeakSegLib.training.modes.pseudo_label`
(semi-supervised), :mod:`~WeakSegLib.training.modes.relabeling` (SMILEr, CAM, box rounds),
:mod:`~WeakSegLib.training.modes.source_free`; this module holds the registry.
"""

from __future__ import annotations

from WeakSegLib.training.modes.base import SemiSupervisedMode, TrainingMode
from WeakSegLib.training.modes.consistency import (
    MeanTeacher,
    MixMatch,
    PiModel,
    TemporalEnsembling,
    VirtualAdversarial,
)
from WeakSegLib.training.modes.pseudo_label import EntropyMinimisation, FixMatch, PseudoLabel
from WeakSegLib.training.modes.relabeling import (
    BoxRounds,
    ClassActivationMaps,
    RelabelingMode,
    SelfTraining,
    Smiler,
)
from WeakSegLib.training.modes.source_free import SourceFreeAdaptation

__all__ = [
    "MODES", "get_mode", "describe_modes",
    "TrainingMode", "SemiSupervisedMode", "RelabelingMode",
    "PiModel", "TemporalEnsembling", "MeanTeacher", "VirtualAdversarial", "EntropyMinimisation", "PseudoLabel",
    "FixMatch", "MixMatch", "SelfTraining", "SourceFreeAdaptation", "Smiler", "ClassActivationMaps", "BoxRounds",
]

MODES: dict[str, type[TrainingMode]] = {
    cls.name: cls for cls in (
        TrainingMode, PiModel, TemporalEnsembling, MeanTeacher, VirtualAdversarial, EntropyMinimisation,
        PseudoLabel, FixMatch, MixMatch, SelfTraining, SourceFreeAdaptation, Smiler, ClassActivationMaps,
        BoxRounds)
}


def get_mode(name: str, options: dict | None = None) -> TrainingMode:
    """The mode ``name`` configured with ``options`` (ValueError for an unknown mode or option)."""
    if name not in MODES:
        raise ValueError(f"Unknown training mode '{name}'; available: {', '.join(sorted(MODES))}.")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"mode_options must be a dict of option -> value, got {type(options).__name__}.")
    return MODES[name](**(options or {}))


def describe_modes() -> list[dict]:
    """Every mode with its family, paper, one-line summary and knobs (defaults): for the CLI and Slicer."""
    return [{"name": name, "family": cls.family, "paper": cls.paper, "summary": cls.summary,
             "options": dict(cls.defaults)} for name, cls in MODES.items()]

"""``weakseg bench``: weak vs full supervision vs Slicer's Grow-from-seeds, on one split and one budget.

One process, one train/test split **by patient** (``Case.group``), one budget per trained method:

====================  =====================================================================================
method                what it is
====================  =====================================================================================
``weakseg``           WeakSeg's objective assembled from the training annotations (``objective="auto"``):
                      pCE + partial Dice + random-walker propagation for scribbles/points, box, tag and size
                      terms for boxes / tags+sizes, SMILE for partial labels, Dice + CE on the labelled
                      volumes of ``semi``
``pce``               plain partial cross-entropy on the annotated voxels, same network and budget — what
                      nnU-Net's ignore label does (the weak baseline); skipped for annotations without voxel
                      labels (boxes, tags+sizes)
``naive``             ``partial`` only, not in the default list: each volume's missing classes read as
                      background, then Dice + CE — the mistake SMILE corrects
                      (:func:`~WeakSegLib.bench.annotations.naive_partial_dataset`)
``full``              Dice + CE on the training volumes' full ground-truth masks (the upper bound)
``growcut``           Slicer's Grow-from-seeds (``vtkImageGrowCutSegment``) on each test volume's own
                      scribbles, no training (the classical interactive baseline)
``interactive-seeds`` the trained ``weakseg`` network's probabilities as a prior + the test volume's own
                      scribbles as hard seeds, combined by a random walker with prior (Grady 2005), see
                      :func:`~WeakSegLib.inference.strokes.refine_with_seeds`
``interactive-finetune``  the trained ``weakseg`` model fine-tuned briefly (``finetune_iterations``) on each
                      test volume's own scribbles, then applied to that volume
``interactive-geodesic``  no model, no training: each test volume's own scribbles completed by a pixel
                      classifier fit on them and geodesic competition between them (what the Segment
                      Editor effect does without a model), see
                      :func:`~WeakSegLib.inference.geodesic.segment_from_strokes`
====================  =====================================================================================

"Own scribbles" of a test volume: its real scribbles with ``real-scribbles``, otherwise scribbles (or
points, with ``points``) simulated from its ground truth, seeded.  The four test-seed methods keep
the seeded voxels' labels, so they are compared on equal terms.

Reported per method, on the held-out volumes: per-class Dice and HD95 (mm), mean ± sd over volumes
(:func:`WeakSegLib.evaluation.metrics.summarise`), training wall time (the trainer's own clock: preparation
included, as the ``minutes`` budget counts it), prediction time, peak RSS sampled during the method
(and its increase over the RSS when the method started), the process-wide peak RSS, peak CUDA
memory, the fraction of annotated voxels.  Model selection never looks at the test volumes: the
reported figure is the model at the end of the budget.  The Dice-vs-time curve evaluates weight
snapshots taken at fixed budget fractions (25/50/75 % by default) *after* training.

Outputs: ``bench.json`` (everything, NaN as null), ``bench.md`` (a table), ``dice_vs_time.png``.

Datasets: any folder :func:`WeakSegLib.data.dataset.load_dataset` reads (``dataset.json``, or an ACDC
or LA folder, :mod:`WeakSegLib.data.datasets`).  ``benchmarks/README.md`` gives the exact commands;
the command line is :mod:`WeakSegLib.cli.bench`.

Modules: :mod:`~WeakSegLib.bench.config` (options), :mod:`~WeakSegLib.bench.split` and
:mod:`~WeakSegLib.bench.annotations` (the data of a run), :mod:`~WeakSegLib.bench.methods` (one module
per family),
:mod:`~WeakSegLib.bench.memory`, :mod:`~WeakSegLib.bench.runner`, :mod:`~WeakSegLib.bench.comparisons`
and :mod:`~WeakSegLib.bench.report` (the outputs).
"""

from WeakSegLib.bench.annotations import (
    annotated_fraction,
    build_test_seeds,
    build_training_annotations,
    naive_partial_dataset,
    test_seed_kind,
)
from WeakSegLib.bench.comparisons import paired_comparisons, per_case_mean_dice, pooled_comparison
from WeakSegLib.bench.config import (
    ANNOTATIONS,
    DEFAULT_METHODS,
    METHOD_LABELS,
    METHODS,
    TEST_SEED_METHODS,
    TRAINED_METHODS,
    BenchConfig,
    expand_methods,
)
from WeakSegLib.bench.memory import MemorySampler
from WeakSegLib.bench.report import format_markdown, write_outputs
from WeakSegLib.bench.runner import run_bench
from WeakSegLib.bench.split import entry_group, split_groups
from WeakSegLib.inference.strokes import refine_with_seeds

__all__ = [
    "ANNOTATIONS", "DEFAULT_METHODS", "METHOD_LABELS", "METHODS", "TEST_SEED_METHODS", "TRAINED_METHODS",
    "BenchConfig", "expand_methods", "MemorySampler", "annotated_fraction", "build_test_seeds",
    "build_training_annotations", "naive_partial_dataset", "test_seed_kind", "entry_group", "split_groups",
    "refine_with_seeds", "run_bench", "paired_comparisons", "per_case_mean_dice", "pooled_comparison",
    "format_markdown", "write_outputs",
]

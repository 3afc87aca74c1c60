"""The module's self-test, runnable without Qt: a tiny phantom annotated like a user would, trained in the
worker through the module's Logic with an iteration budget, every class's Dice checked.

``WeakSegTest`` (in ``WeakSeg.py``) runs it inside Slicer, the test suite in plain Python against the
MRML library of ``slicer-core``; both through the same Logic.  It finishes in well under 3 minutes on
a CPU (the extension build servers stop a test after 900 s).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: Phantom size (z, y, x) and the iteration budget: small enough for a CPU build server.
SHAPE = (16, 32, 32)
ITERATIONS = 150
#: Every class must reach this Dice (a class left at 0.06 fails the test).
MIN_DICE = 0.7
CLASSES = (("Background", (0, 0, 0)), ("Organ", (216, 101, 79)), ("Lesion", (111, 184, 210)))


def phantom(shape=SHAPE, seed: int = 0):
    """A noisy ellipsoid organ holding a brighter spherical lesion: ``(image, truth)``, (z, y, x) arrays."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cz, cy, cx = (n / 2.0 for n in shape)
    organ = ((zz - cz) / (0.38 * shape[0])) ** 2 + ((yy - cy) / (0.34 * shape[1])) ** 2 \
        + ((xx - cx) / (0.28 * shape[2])) ** 2 <= 1.0
    lesion = (zz - cz) ** 2 + (yy - cy - 1) ** 2 + (xx - cx) ** 2 <= (0.14 * shape[1]) ** 2
    truth = np.where(lesion, 2, np.where(organ, 1, 0)).astype(np.int16)
    image = np.select([lesion, organ], [2.0, 1.0], 0.0) + np.random.default_rng(seed).normal(0.0, 0.25, shape)
    return image.astype(np.float32), truth


def make_annotated_phantom(scene=None, shape=SHAPE, seed: int = 0, name: str = "WeakSegTestPhantom"):
    """The phantom as a volume node and a segmentation with simulated scribbles and size ranges (true size
    +/- 20 %) as a user would enter them.  Returns ``(volume_node, segmentation_node, truth, class names)``."""
    import slicer

    from WeakSegLib import mrml
    from WeakSegLib.data.simulate import simulate_scribbles, simulate_size_ranges
    from WeakSegLib.data.volume import Geometry, Volume

    scene = scene or slicer.mrmlScene
    image, truth = phantom(shape, seed)
    geometry = Geometry(tuple(shape), (1.0, 1.0, 1.5))
    names = [name_ for name_, _color in CLASSES]
    truth_volume = Volume(truth, geometry)
    scribbles = simulate_scribbles(truth_volume, len(names), seed=seed).labels
    sizes = simulate_size_ranges(truth_volume, len(names), margin=0.2).size_ranges_ml
    volume_node = mrml.volume_to_node(Volume(image, geometry), name, scene)
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} scribbles")
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    for class_id, (class_name, color) in enumerate(CLASSES):
        segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", class_name, [c / 255.0 for c in color])
        mask = (scribbles == class_id).astype(np.uint8)
        if mask.any():
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation_node, segment_id, volume_node)
        if class_id in sizes:
            mrml.set_segment_priors(segmentation_node, segment_id, size_range_ml=sizes[class_id])
    return volume_node, segmentation_node, truth, names


def dice_per_class(predicted: np.ndarray, truth: np.ndarray, names) -> dict[str, float]:
    """Dice of every foreground class (index >= 1 of ``names``)."""
    out = {}
    for class_id in range(1, len(names)):
        p, t = predicted == class_id, truth == class_id
        denominator = int(p.sum() + t.sum())
        out[names[class_id]] = 1.0 if denominator == 0 else float(2.0 * np.sum(p & t) / denominator)
    return out


def check_dice(dice: dict[str, float], minimum: float = MIN_DICE) -> None:
    """AssertionError naming every class below ``minimum``."""
    low = {name: round(value, 3) for name, value in dice.items() if value < minimum}
    if low:
        raise AssertionError(f"Dice below {minimum} for {low} (all classes: "
                             f"{ {k: round(v, 3) for k, v in dice.items()} }).")


def run_self_test(logic, scene=None, iterations: int = ITERATIONS, device: str = "cpu", minimum: float = MIN_DICE,
                  step=lambda text: None, timeout_s: float = 600.0) -> dict:
    """Train on the phantom through ``logic`` (the module's WeakSegLogic), check the result node and
    every class's Dice, save the model and segment the volume again with it.  ``step(text)`` reports
    progress (``delayDisplay`` in Slicer).  Returns ``{"dice": ..., "training": session,
    "segmentation": session}``; AssertionError on any failure."""
    from WeakSegLib import mrml

    volume_node, segmentation_node, truth, names = make_annotated_phantom(scene)
    annotation = mrml.annotation_from_nodes(segmentation_node, volume_node)
    drawn = annotation.labels >= 0
    if not drawn.any() or not np.array_equal(annotation.labels[drawn], truth[drawn]):
        raise AssertionError("The scribbles read back from the segmentation do not match the phantom.")

    step(f"Training {iterations} iterations in the background worker")
    session = logic.train([(volume_node, segmentation_node)], iterations=iterations, device=device, seed=0,
                          timeoutS=timeout_s)
    if session.status != "completed":
        raise AssertionError(f"Training ended '{session.status}': {session.error_message}")
    if len(session.result_nodes) != 1:
        raise AssertionError(f"Expected one result segmentation, got {len(session.result_nodes)}.")
    result_node = next(iter(session.result_nodes.values()))
    if result_node.GetName() != mrml.result_name(volume_node):
        raise AssertionError(f"The result is named '{result_node.GetName()}'.")
    if not session.history or not logic.getParameterNode().modelPath:
        raise AssertionError("No progress was reported or no model was kept.")
    predicted = mrml.labels_from_segmentation_node(result_node, volume_node, session.classes).array
    dice = dice_per_class(predicted, truth, names)
    logger.info("WeakSeg self-test: Dice per class %s", {k: round(v, 3) for k, v in dice.items()})
    check_dice(dice, minimum)

    step("Segmenting the volume again with the kept model")
    prediction = logic.segment([volume_node], device=device, timeoutS=timeout_s)
    if prediction.status != "completed":
        raise AssertionError(f"Segmentation ended '{prediction.status}': {prediction.error_message}")
    again_node = next(iter(prediction.result_nodes.values()))
    if again_node is not result_node:
        raise AssertionError("Segmenting again added a new node instead of updating the volume's result.")
    again = mrml.labels_from_segmentation_node(again_node, volume_node, session.classes).array
    if np.mean(again == predicted) < 0.95:
        raise AssertionError("The kept model does not reproduce the training's segmentation.")
    return {"dice": dice, "training": session, "segmentation": prediction}

"""Training engine: objective assembly, constraint granularity, resume, cancel, NaN, model I/O."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest
import torch

from WeakSegLib import Case, Dataset, Geometry, Volume, WeakAnnotation
from WeakSegLib import losses as L
from WeakSegLib.config import DEFAULT_MINUTES
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom_dataset
from WeakSegLib.data.simulate import combine, simulate, simulate_size_ranges
from WeakSegLib.losses import relative_bound_loss
from WeakSegLib.model import Model
from WeakSegLib.networks.planning import plan_training
from WeakSegLib.training import TrainConfig, TrainingError, train
from WeakSegLib.training.box_prior import ellipse_labels
from WeakSegLib.training.data import (
    BatchSampler,
    draw_patch_window,
    pad_to_patch,
    prepare_case,
    resample_slice_tags,
    slice_tag_matrix,
)
from WeakSegLib.training.objective import Objective
from WeakSegLib.training.trainer import Trainer
from WeakSegLib.transforms.preprocessing import Preprocessing

K = len(PHANTOM_CLASSES)
SHAPE = (8, 40, 40)
TINY = dict(base_filters=8, batch_size=2, propagate_scribbles=False, checkpoint_every=5, log_every=5)


def tiny_dataset(kind: str = "scribbles", n: int = 2, seed: int = 0, **options) -> Dataset:
    data = make_phantom_dataset(n_cases=n, seed=seed, shape=SHAPE)
    for i, case in enumerate(data.cases):
        case.annotation = simulate(case.ground_truth, K, kind, seed=seed + i, **options)
    return data


def tiny_config(**kw) -> TrainConfig:
    base = dict(minutes=None, iterations=10, seed=3, **TINY)
    base.update(kw)
    return TrainConfig(**base)


def _prepared(data: Dataset, config: TrainConfig, dims: int = 3):
    plan = plan_training(data, TrainConfig(**{**config.to_dict(), "dims": dims}))
    pre = Preprocessing("MR", plan.dims, plan.target_spacing_zyx)
    return plan, [prepare_case(c, pre, K, config) for c in data.cases]


# ------------------------------------------------------------------------------------ objective
@pytest.mark.parametrize("kind, expected", [
    ("scribbles", {"partial_ce", "partial_dice"}),
    ("points", {"partial_ce", "partial_dice"}),
    ("boxes", {"box_emptiness", "box_tightness", "box_fill", "partial_ce"}),   # background outside every box
    ("tags+sizes", {"size", "size_proposal", "tags"}),
    ("partial", {"smile"}),
    ("full", {"dice_ce"}),
])
def test_objective_is_assembled_from_the_annotations(kind, expected):
    data = tiny_dataset(kind, n=2)
    if kind == "partial":
        # Make sure neither case kept every class (else it would be fully annotated).
        for case in data.cases:
            case.annotation = simulate(case.ground_truth, K, "partial", seed=1, drop_rate=0.99)
    config = tiny_config()
    _, prepared = _prepared(data, config)
    terms = set(Objective(config, K).describe(prepared))
    assert expected <= terms, terms
    unrelated = {"size", "tags", "box_emptiness", "smile", "dice_ce", "partial_ce"} - expected
    assert not (terms & unrelated - {"partial_dice"}), terms


def test_combined_annotations_combine_terms_and_baselines_use_one_term():
    data = make_phantom_dataset(n_cases=1, shape=SHAPE)
    gt = data.cases[0].ground_truth
    data.cases[0].annotation = combine(simulate(gt, K, "scribbles"), simulate(gt, K, "tags+sizes"),
                                       simulate(gt, K, "boxes"))
    config = tiny_config()
    _, prepared = _prepared(data, config)
    terms = set(Objective(config, K).describe(prepared))
    assert {"partial_ce", "size", "tags", "box_emptiness", "box_tightness"} <= terms
    assert Objective(tiny_config(objective="pce"), K).describe(prepared) == ["partial_ce"]
    ratio = Objective(config, K, class_ratio_prior=[0.7, 0.1, 0.1, 0.1]).describe(prepared)
    assert "class_ratio" in ratio


def test_loss_weights_can_be_overridden():
    config = TrainConfig.from_dict({"minutes": 1, "weights": {"size": 3.0, "entropy": 0.2}})
    assert config.weights.size == 3.0 and config.weights.entropy == 0.2
    with pytest.raises(ValueError, match="Unknown loss weight"):
        TrainConfig.from_dict({"minutes": 1, "weights": {"sizes": 1.0}})
    with pytest.raises(ValueError, match="Unknown training option"):
        TrainConfig.from_dict({"minutes": 1, "learnin_rate": 1.0})
    # Neither minutes nor iterations: the default time budget (the rule of Testing/test_config_budget.py).
    assert (TrainConfig(minutes=None, iterations=None).minutes, TrainConfig().iterations) == (DEFAULT_MINUTES, None)


def test_crf_term_joins_scribble_cases_and_trains():
    data = tiny_dataset("scribbles", n=2)
    config = tiny_config(iterations=4, log_every=1, weights={"crf": 2.0})
    _, prepared = _prepared(data, config)
    assert "crf" in Objective(config, K).describe(prepared)
    assert "crf" in Objective(tiny_config(), K).describe(prepared)              # on by default for scribbles
    assert "crf" not in Objective(tiny_config(weights={"crf": 0.0}), K).describe(prepared)
    result = train(data, config)
    logged = [entry["terms"]["crf"] for entry in result.history if "terms" in entry]
    assert logged and all(0.0 < v <= 2.0 for v in logged)
    with pytest.raises(ValueError, match="crf_radius"):
        tiny_config(crf_radius=0)


def _psi(z: float, t: float) -> float:
    """The log-barrier extension by hand (Kervadec et al. 2022, eq. 7)."""
    return -math.log(-z) / t if z <= -1 / t**2 else t * z + (2 * math.log(t) + 1) / t


@pytest.mark.parametrize("method", ["penalty", "log_barrier"])
def test_size_tag_and_fill_bounds_are_relative_violations_by_hand_in_float64(method):
    # n = 1000 voxels (floor of a bound: max(1, 0.1% of n) = 1); class 0 inactive.
    # class 1: 10 <= V = 100 <= 20: z_low = -9, z_up = (100 - 20) / 20 = 4;
    # class 2: V = 0.5 <= 0 (suppression): z_up = 0.5 / max(0, 1);  class 3: V = 5 >= 20: z_low = 0.75.
    objective = Objective(tiny_config(constraint_method=method), K)
    objective.t = 5.0
    bounded = partial(relative_bound_loss, method=objective.method, t=objective.t)   # what the objective calls
    sizes = torch.tensor([[500.0, 100.0, 0.5, 5.0]], dtype=torch.float64, requires_grad=True)
    lower = torch.tensor([[0.0, 10.0, 0.0, 20.0]], dtype=torch.float64)
    upper = torch.tensor([[1000.0, 20.0, 0.0, 1000.0]], dtype=torch.float64)
    active = torch.tensor([[False, True, True, True]])
    if method == "penalty":      # quadratic up to z = 1, then linear (2z - 1)
        expected = ((2 * 4 - 1) + 0.5**2 + 0.75**2) / 3
    else:
        expected = (_psi(-9, 5) + _psi(4, 5) + _psi(0.5, 5) + _psi(0.75, 5)) / 3
    value = bounded(sizes, lower, upper, active, 1000.0)
    assert value.dtype == torch.float64 and value.item() == pytest.approx(expected, rel=1e-12)
    assert torch.autograd.gradcheck(lambda v: bounded(v, lower, upper, active, 1000.0), (sizes,))
    nothing = bounded(sizes, lower, upper, torch.zeros_like(active), 1000.0)
    assert nothing.item() == 0.0 and nothing.requires_grad


# ------------------------------------------------------------------------------------ granularity
def test_2d_volume_batch_holds_every_slice_and_the_size_term_sees_the_whole_volume():
    data = tiny_dataset("tags+sizes", n=2)
    config = tiny_config()
    plan, prepared = _prepared(data, config, dims=2)
    assert plan.dims == 2
    sampler = BatchSampler(prepared, plan, augment=False, seed=0)
    case = prepared[0]
    batch = sampler.volume_batch(case)
    assert batch.stack_slices and batch.image.shape[0] == case.image.shape[1]   # all slices of one volume
    torch.manual_seed(0)
    logits = torch.randn(batch.image.shape[0], K, *batch.image.shape[2:], requires_grad=True)
    objective = Objective(config, K, class_names=[ci.name for ci in PHANTOM_CLASSES])
    terms, violations = objective.global_terms(logits, batch)
    bounded = partial(relative_bound_loss, method=objective.method, t=objective.t)
    # Reference: the soft sizes summed over the stacked (1, C, z, y, x) volume, bounds from mL.
    vol = logits.permute(1, 0, 2, 3)[None]
    sizes = torch.softmax(vol, 1).sum(dim=(2, 3, 4))
    n = float(vol[0, 0].numel())
    lower = torch.zeros(1, K)
    upper = torch.full((1, K), n)
    active = torch.zeros(1, K, dtype=torch.bool)
    for c, (lo, hi) in case.size_bounds.items():
        lower[0, c], upper[0, c], active[0, c] = lo / batch.voxel_ml, hi / batch.voxel_ml, True
    expected = bounded(sizes, lower, upper, active, n)
    assert torch.allclose(terms["size"], config.weights.size * expected)
    # By hand for one class: relative violation, quadratic up to 1 then linear.
    c = next(iter(case.size_bounds))
    sizes = sizes.detach()
    v, a, b = float(sizes[0, c]), float(lower[0, c]), float(upper[0, c])
    z = max((a - v) / a, (v - b) / b, 0.0)
    assert float(bounded(sizes[:, c:c + 1], lower[:, c:c + 1], upper[:, c:c + 1], active[:, c:c + 1], n)) \
        == pytest.approx(z * z if z <= 1 else 2 * z - 1, rel=1e-5)
    # The violation reported for that class, by its name, is z itself (kept as the objective's latest).
    assert violations[f"size/{PHANTOM_CLASSES[c].name}"] == pytest.approx(z, abs=1e-4)
    assert objective.violations[f"size/{PHANTOM_CLASSES[c].name}"] == violations[f"size/{PHANTOM_CLASSES[c].name}"]
    # Per-slice sizes (each slice its own region) would give a different, wrong value.
    slice_sizes = torch.softmax(logits, 1).sum(dim=(2, 3))
    per_slice = bounded(slice_sizes, lower.expand_as(slice_sizes), upper.expand_as(slice_sizes),
                        active.expand_as(slice_sizes), n)
    assert not torch.allclose(per_slice, expected)
    terms["size"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_3d_volume_batch_is_the_whole_volume_at_reduced_resolution():
    data = tiny_dataset("tags+sizes", n=1)
    config = tiny_config(patch_size=[8, 16, 16])
    plan, prepared = _prepared(data, config, dims=3)
    sampler = BatchSampler(prepared, plan, augment=False, seed=0)
    batch = sampler.volume_batch(prepared[0])
    assert batch.image.shape[0] == 1
    assert np.prod(batch.image.shape[2:]) <= 2 * np.prod(plan.patch_size)
    # The whole field of view is kept: voxel volume grows as resolution drops.
    full = np.prod(prepared[0].image.shape[1:]) * prepared[0].voxel_ml
    assert np.prod(batch.image.shape[2:]) * batch.voxel_ml == pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_tags_and_sizes_only_plan_one_prediction_window_per_volume(dims):
    # Trained on whole-volume batches alone, the network must predict whole volumes: instance
    # normalisation over a smaller window gives other statistics.
    config = TrainConfig(minutes=None, iterations=1, base_filters=8, dims=dims, target_spacing=[2.0, 2.0, 2.0])
    tags = tiny_dataset("tags+sizes", n=2)
    plan = plan_training(tags, config)
    pre = Preprocessing("MR", plan.dims, plan.target_spacing_zyx)
    shapes = [pre.to_network(c.image).shape[1:] for c in tags.cases]
    assert plan.batch_size == 1
    assert all(p >= n for shape in shapes for p, n in zip(plan.patch_size, shape[3 - dims:]))
    # Any voxel label (here scribbles) keeps the planned patch and batch.
    scribbles = plan_training(tiny_dataset("scribbles", n=2), config)
    assert scribbles.batch_size > 1 and np.prod(scribbles.patch_size) <= np.prod(plan.patch_size)


def test_slice_tags_resampled_along_z_keep_only_slices_whose_tag_is_certain():
    tags = {i: 3 <= i <= 10 for i in range(14)}
    # Halving: output slice j covers input slices 2j and 2j+1; the two that straddle 2-3 and 10-11 stay unknown.
    assert resample_slice_tags(tags, 14, 7) == {0: False, 2: True, 3: True, 4: True, 6: False}
    # Doubling: each output slice lies inside one input slice and inherits its tag.
    assert resample_slice_tags(tags, 14, 28) == {j: 3 <= j // 2 <= 10 for j in range(28)}
    assert resample_slice_tags({0: True, 2: False}, 3, 3) == {0: True, 2: False}
    assert resample_slice_tags({0: True, 2: False}, 3, 1) == {}          # slice 1 unknown: nothing certain
    matrix = slice_tag_matrix({1: tags, 2: {0: False, 1: False, 2: True}}, 14, 7, 3)
    assert matrix.shape == (7, 3) and matrix[:, 0].eq(-1).all()
    assert matrix[:, 1].tolist() == [0, -1, 1, 1, 1, -1, 0] and matrix[:, 2].tolist() == [0, -1, -1, -1, -1, -1, -1]


def test_3d_volume_batch_applies_slice_tags_to_its_resized_z_slices():
    data = tiny_dataset("tags+sizes", n=1, per_slice=True)
    config = tiny_config(patch_size=[8, 16, 16])
    plan, prepared = _prepared(data, config, dims=3)
    case = prepared[0]
    assert case.slice_tags                                    # kept on the 3D network grid
    batch = BatchSampler(prepared, plan, augment=False, seed=0).volume_batch(case)
    assert not batch.stack_slices
    torch.manual_seed(0)
    logits = torch.randn(1, K, *batch.image.shape[2:], requires_grad=True)
    objective = Objective(config, K, class_names=[ci.name for ci in PHANTOM_CLASSES])
    terms, violations = objective.global_terms(logits, batch)
    volume_tags = torch.full((1, K), -1, dtype=torch.long)
    for c, present in case.tags.items():
        volume_tags[0, c] = int(present)
    min_size = float(config.tag_min_size_voxels)
    expected_volume = L.tag_constraint_loss(logits, volume_tags, min_size=min_size, method=objective.method,
                                            t=objective.t)
    slices = logits[0].transpose(0, 1)                        # (z, K, y, x) of the resized volume
    tags = slice_tag_matrix(case.slice_tags, case.image.shape[1], slices.shape[0], K)
    assert (tags[:, 1:] >= 0).any() and (tags[:, 1:] == 0).any()
    expected_slices = L.tag_constraint_loss(slices, tags, min_size=min_size, method=objective.method, t=objective.t)
    w = config.weights.tags
    assert torch.allclose(terms["tags"], w * expected_volume + w * expected_slices)
    assert any(key.startswith("slice_tags/") for key in violations)
    terms["tags"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ training runs
def test_train_save_load_and_predict_geometry(tmp_path, oblique_geometry):
    data = tiny_dataset("scribbles", n=2)
    result = train(data, tiny_config(iterations=4), tmp_path / "model")
    assert result.status == "completed" and result.iterations == 4
    loaded = Model.load(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["classes"][1]["name"] == PHANTOM_CLASSES[1].name and meta["config"]["seed"] == 3
    image = data.cases[0].image
    a = result.model.predict(image, return_probabilities=True)
    b = loaded.predict(image, return_probabilities=True)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.allclose(a.probabilities.array, b.probabilities.array, atol=1e-5)
    assert b.probabilities.array.shape == image.shape + (K,)
    # Any volume of the modality, on any grid: output lies on the input's exact geometry.
    rng = np.random.default_rng(0)
    oblique = Volume(rng.normal(size=oblique_geometry.shape).astype(np.float32), oblique_geometry)
    pred = loaded.predict(oblique, tta=True, largest_component=True)
    assert pred.labels.geometry == oblique_geometry
    assert pred.labels.array.shape == oblique_geometry.shape


def test_model_weights_are_loaded_safely(tmp_path):
    data = tiny_dataset("scribbles", n=1)
    train(data, tiny_config(iterations=1), tmp_path / "m")
    # A pickle that would run code is refused by weights_only loading.
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Evil()}, tmp_path / "m" / "weights.pt")
    with pytest.raises(ValueError, match="Could not load weights"):
        Model.load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a WeakSeg model folder"):
        Model.load(tmp_path)


def test_cancel_stops_cleanly_with_a_usable_model(tmp_path):
    data = tiny_dataset("scribbles", n=1)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    result = train(data, tiny_config(iterations=100), tmp_path / "m", should_stop=should_stop)
    assert result.status == "cancelled" and result.iterations == 3
    pred = Model.load(tmp_path / "m").predict(data.cases[0].image)
    assert pred.labels.array.shape == data.cases[0].image.shape


class _EventLog:
    """A callback that records the events it sees (and the iteration at each)."""

    def __init__(self):
        self.events: list[tuple[str, int]] = []

    def on_fit_start(self, trainer):
        self.events.append(("fit_start", trainer.iteration))

    def on_iteration_start(self, trainer):
        self.events.append(("iteration_start", trainer.iteration))

    def on_iteration_end(self, trainer):
        self.events.append(("iteration_end", trainer.iteration))

    def on_fit_end(self, trainer):
        self.events.append(("fit_end", trainer.result.iterations))


def test_callbacks_see_every_event_in_order_and_change_nothing():
    data = tiny_dataset("scribbles", n=1)
    log, bare = _EventLog(), object()           # a callback may define any subset of the events
    trainer = Trainer(data, tiny_config(iterations=3), callbacks=[log, bare])
    result = trainer.fit()
    steps = [e for i in range(3) for e in (("iteration_start", i), ("iteration_end", i + 1))]
    assert log.events == [("fit_start", 0), *steps, ("fit_end", 3)]
    assert trainer.result is result
    plain = train(data, tiny_config(iterations=3))
    for key, value in plain.model.network.state_dict().items():
        assert torch.equal(value, result.model.network.state_dict()[key])


class _ExplodingTrainer(Trainer):
    def train_step(self):
        total, terms, violations = super().train_step()
        if self.iteration >= 6:
            total = total * float("nan")
        return total, terms, violations


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    data = tiny_dataset("scribbles", n=1)
    trainer = _ExplodingTrainer(data, tiny_config(iterations=20), tmp_path / "m")
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 7.*last good checkpoint"):
        trainer.fit()
    state = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 5
    assert all(torch.isfinite(v).all() for v in state["network"].values() if v.is_floating_point())
    Model.load(tmp_path / "m")  # the model of the last good state is there


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from WeakSegLib.data.phantom import make_phantom_dataset, PHANTOM_CLASSES
    from WeakSegLib.data.simulate import simulate
    from WeakSegLib.training import TrainConfig, train
    data = make_phantom_dataset(n_cases=2, seed=0, shape=(8, 40, 40))
    for i, case in enumerate(data.cases):
        case.annotation = simulate(case.ground_truth, len(PHANTOM_CLASSES), "scribbles", seed=i)
    config = TrainConfig(minutes=None, iterations=12, seed=3, base_filters=8, batch_size=2,
                         propagate_scribbles=False, checkpoint_every=5, log_every=1)
    kill_at = int(sys.argv[2])
    def progress(event):
        if kill_at and event.get("iteration") == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)   # a real, abrupt interruption
    train(data, config, sys.argv[1], progress=progress, resume=sys.argv[3] == "resume")
""")


@pytest.mark.integration
@pytest.mark.slow
def test_resume_after_a_killed_process_gives_the_same_model(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    ref = run(str(tmp_path / "ref"), "0", "fresh")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run(str(tmp_path / "resumed"), "8", "fresh")
    assert killed.returncode == -9                        # died at iteration 8, after the checkpoint at 5
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 5
    resumed = run(str(tmp_path / "resumed"), "0", "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_learns_the_phantom_from_scribbles_and_sizes(tmp_path):
    """A short run must clearly beat chance on a held-out phantom (learning sanity check).

    800 iterations: at 400 the Outer Dice was 0.17-0.58 over seeds 0-2 (seed noise across the 0.5 line);
    at 800, 0.78 and 0.81 on seeds 0 and 1."""
    from WeakSegLib.evaluation.metrics import evaluate

    data = make_phantom_dataset(n_cases=3, seed=1, shape=(12, 48, 48))
    for i, case in enumerate(data.cases[:2]):
        case.annotation = combine(simulate(case.ground_truth, K, "scribbles", seed=i),
                                  simulate(case.ground_truth, K, "sizes"))
    train_set = Dataset(data.classes, data.cases[:2])
    test = data.cases[2]
    result = train(train_set, TrainConfig(minutes=None, iterations=800, seed=0, base_filters=8, batch_size=8, dims=2))
    report = evaluate(result.model.predict(test.image).labels, test.ground_truth, data.class_names)
    assert report["classes"]["Outer"]["dice"] > 0.5, report["classes"]


def test_unannotated_dataset_is_refused_with_a_clear_message():
    data = make_phantom_dataset(n_cases=1, shape=SHAPE)
    with pytest.raises(TrainingError, match="No loss term applies"):
        train(data, tiny_config(iterations=1))


def test_geometry_mismatch_between_image_and_annotation_names_both():
    g1 = Geometry((4, 8, 8), (1, 1, 2))
    g2 = Geometry((4, 8, 8), (1, 1, 3))
    labels = np.full(g2.shape, -1, np.int16)
    labels[0, 0, 0] = 1
    ann = WeakAnnotation(g2, 2, labels)
    with pytest.raises(ValueError, match=r"(?s)spacing.*2.*spacing.*3"):
        Case("c", Volume(np.zeros(g1.shape, np.float32), g1), ann)


def test_partial_label_loss_selects_smile_or_the_marginal_loss():
    data = tiny_dataset("partial", n=2)
    for case in data.cases:
        case.annotation = simulate(case.ground_truth, K, "partial", seed=1, drop_rate=0.99)
    values = {}
    for choice in ("smile", "marginal"):
        config = tiny_config(partial_label_loss=choice)
        plan, prepared = _prepared(data, config)
        batch = BatchSampler(prepared, plan, augment=False, seed=0).patch_batch()
        torch.manual_seed(0)
        logits = torch.randn(batch.image.shape[0], K, *batch.image.shape[2:])
        values[choice] = float(Objective(config, K).voxel_terms(logits, batch)["smile"])
    complete = batch.complete
    partial = complete.any(1) & ~(complete[:, 1:].all(1) & complete[:, 0])
    expected = L.marginal_dice_ce_loss(logits[partial], batch.labels[partial], complete[partial], ignore_index=-1)
    assert values["marginal"] == pytest.approx(float(expected), rel=1e-5)
    assert values["smile"] != pytest.approx(values["marginal"])
    with pytest.raises(ValueError, match="partial_label_loss must be 'smile' or 'marginal'"):
        tiny_config(partial_label_loss="sigmoid")


# ------------------------------------------------------------------------------------ boxes
def test_background_outside_every_box_only_when_every_class_is_boxed_or_absent():
    data = tiny_dataset("boxes", n=1)
    ann = data.cases[0].annotation
    assert {b.class_id for b in ann.boxes} == set(range(1, K)) and ann.labels is None
    config = tiny_config(box_prior="none")         # no ellipsoid core labels inside the boxes: the outside alone
    _, (prepared,) = _prepared(data, config)
    inside = torch.zeros(prepared.image.shape[1:], dtype=torch.bool)
    for _, start, stop in prepared.boxes:
        inside[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    assert (prepared.labels[~inside] == 0).all() and (prepared.labels[inside] == -1).all()
    assert ann.labels is None                                  # the user's annotation is untouched
    assert {"partial_ce", "box_emptiness", "box_tightness"} <= set(Objective(config, K).describe([prepared]))
    # One class without a box (and not tagged absent) may lie anywhere: nothing is known outside the boxes.
    ann.boxes = [b for b in ann.boxes if b.class_id != 1]
    _, (prepared,) = _prepared(data, config)
    assert prepared.labels is None
    ann.tags = {1: False}                                      # ... unless it is tagged absent
    _, (prepared,) = _prepared(data, config)
    assert prepared.labels is not None and (prepared.labels[prepared.labels != -1] == 0).all()
    # The option can be switched off (the emptiness term alone then speaks for the outside).
    _, (prepared,) = _prepared(data, tiny_config(box_prior="none", box_background=False))
    assert prepared.labels is None


def test_box_fill_bounds_add_a_fill_term_and_are_validated():
    data = tiny_dataset("boxes", n=1)
    config = tiny_config(box_fill_bounds=[0.2, 0.9])
    plan, prepared = _prepared(data, config, dims=2)
    objective = Objective(config, K)
    assert "box_fill" in objective.describe(prepared)
    batch = BatchSampler(prepared, plan, augment=False, seed=0).volume_batch(prepared[0])
    logits = torch.zeros(batch.image.shape[0], K, *batch.image.shape[2:], requires_grad=True)
    terms, _ = objective.global_terms(logits, batch)
    # Uniform softmax: every box is filled to 1/K = 0.25 of its class, inside [0.2, 0.9]: no cost.
    assert float(terms["box_fill"].detach()) == pytest.approx(0.0, abs=1e-7)
    config = tiny_config(box_fill_bounds=[0.5, 0.9])
    terms, _ = Objective(config, K).global_terms(logits, batch)
    # Each box filled to 0.25 against a lower bound of 0.5: relative violation z = (0.5 A - 0.25 A) / (0.5 A)
    # = 0.5 (floored at 0.1 % of the box for tiny bounds), penalty z^2, weight 10.
    boxes = Objective._boxes_on_batch(prepared[0].boxes, batch, (batch.image.shape[0], *batch.image.shape[2:]))
    areas = [float(np.prod([b - a for a, b in zip(start, stop)])) for _, start, stop in boxes]
    expected = np.mean([(0.25 * a / max(0.5 * a, 1e-3 * a, 1.0)) ** 2 for a in areas])
    assert expected > 0.1
    assert float(terms["box_fill"].detach()) == pytest.approx(config.weights.box_fill * expected, rel=1e-4)
    terms["box_fill"].backward()
    assert logits.grad.abs().sum() > 0
    # On by default (lower bound 0.15), off with None.
    assert "box_fill" in Objective(tiny_config(), K).describe(prepared)
    assert "box_fill" not in Objective(tiny_config(box_fill_bounds=None), K).describe(prepared)
    for bad in ([0.5, 0.2], [0.1], [-0.1, 0.5], [0.1, 1.5]):
        with pytest.raises(ValueError, match="box_fill_bounds"):
            tiny_config(box_fill_bounds=bad)


def test_patch_windows_are_drawn_from_the_generator_and_padded_to_the_patch():
    data = tiny_dataset("scribbles", n=1)
    plan, _ = _prepared(data, tiny_config(), dims=2)
    plan = dataclasses.replace(plan, patch_size=[16, 64])
    shape = (5, 30, 40)                      # y longer than the patch, x shorter
    windows = [draw_patch_window(shape, plan, torch.Generator().manual_seed(4), slices=torch.tensor([1, 3]))
               for _ in range(2)]
    assert windows[0] == windows[1]           # the same seed draws the same window
    index, valid = windows[0]
    assert index[0] in (1, 3) and valid == [16, 40]
    assert index[1].stop - index[1].start == 16 and 0 <= index[1].start <= 14 and index[2] == slice(0, 40)
    index, _ = draw_patch_window(shape, plan, torch.Generator().manual_seed(0), centre=[2, 20, 7])
    assert index[0] == 2 and abs(index[1].start - (20 - 8)) <= 2
    image = torch.arange(float(np.prod(shape))).reshape(1, *shape) + 1
    labels = torch.zeros(shape, dtype=torch.long)
    patch = pad_to_patch(image[(slice(None), *index)], plan.patch_size)
    assert patch.shape == (1, 16, 64) and bool((patch[..., 40:] == 0).all()) and bool((patch[..., :40] > 0).all())
    padded = pad_to_patch(labels[index], plan.patch_size, UNKNOWN)
    assert padded.shape == (16, 64) and bool((padded[:, 40:] == UNKNOWN).all()) and bool((padded[:, :40] == 0).all())


def test_foreground_oversampling_draws_each_annotated_class_equally_often():
    # A large class on most of the volume and a 2-voxel class in a far corner: drawing a centre among
    # all foreground voxels would hit the small class once in ~500 patches; drawing the class first
    # (nnU-Net's class-balanced oversampling) hits it in about half of them.
    data = tiny_dataset("scribbles", n=1)
    config = tiny_config()
    plan, prepared = _prepared(data, config, dims=3)
    plan = dataclasses.replace(plan, patch_size=[2, 4, 4], batch_size=1)
    case = prepared[0]
    labels = torch.full(case.image.shape[1:], UNKNOWN, dtype=torch.long)
    labels[:, :-8, :-8] = 1
    labels[-1, -1, -2:] = 3
    case = dataclasses.replace(case, labels=labels, pseudo=None)
    sampler = BatchSampler([case], plan, augment=False, seed=0, oversample_foreground=1.0)
    hits = [bool((sampler.patch_batch().labels == 3).any()) for _ in range(200)]
    assert 0.35 < sum(hits) / len(hits) < 0.65


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_volume_batch_crop_or_pad_keeps_boxes_on_their_objects(fit):
    # In-plane 22 voxels, total stride 4: the 2D volume batch is cropped to 20.  With a total stride
    # of 32 (a plan made for larger images, e.g. a model fine-tuned on smaller ones) it is padded to 32.
    data = make_phantom_dataset(n_cases=1, seed=0, shape=(8, 22, 22))
    case = data.cases[0]
    case.annotation = simulate(case.ground_truth, K, "boxes", seed=0)
    boxed = {b.class_id for b in case.annotation.boxes}
    case.annotation.tags = {c: False for c in range(1, K) if c not in boxed}   # so the outside is background
    config = tiny_config()
    plan, (prepared,) = _prepared(data, config, dims=2)
    assert prepared.labels is not None
    if fit == "pad":
        plan = dataclasses.replace(plan, strides=[[1, 1]] + [[2, 2]] * 5)
    pre = Preprocessing("MR", plan.dims, plan.target_spacing_zyx)
    gt = pre.labels_to_network(case.ground_truth.array, case.image.geometry.shape, case.image.geometry.spacing_zyx)
    batch = BatchSampler([prepared], plan, augment=False, seed=0).volume_batch(prepared)
    assert batch.image.shape[2] == {"crop": 20, "pad": 32}[fit]
    oy, ox = batch.crop_offset

    def fit(volume):                      # by hand: index i of the case lands at i - offset in the batch
        out = torch.full((volume.shape[0], *batch.image.shape[2:]), -1, dtype=torch.long)
        for y in range(volume.shape[1]):
            for x in range(volume.shape[2]):
                if 0 <= y - oy < out.shape[1] and 0 <= x - ox < out.shape[2]:
                    out[:, y - oy, x - ox] = volume[:, y, x]
        return out

    fitted = fit(gt)
    assert torch.equal(batch.labels, fit(prepared.labels))
    boxes = Objective._boxes_on_batch(prepared.boxes, batch, (batch.image.shape[0], *batch.image.shape[2:]))
    for c, start, stop in boxes:
        region = fitted[tuple(slice(a, b) for a, b in zip(start, stop))]
        assert (region == c).any()
    for c in range(1, K):
        inside = torch.zeros_like(fitted, dtype=torch.bool)
        for k, start, stop in boxes:
            if k == c:
                inside[tuple(slice(a, b) for a, b in zip(start, stop))] = True
        assert not ((fitted == c) & ~inside).any()                     # the class never leaves its boxes


def test_volume_batches_only_for_cases_whose_global_terms_are_weighted():
    data = tiny_dataset("boxes", n=1)
    config = tiny_config()
    _, prepared = _prepared(data, config)
    assert prepared[0].boxes and Objective(config, K).needs_volume_batch(prepared[0])
    off = tiny_config(weights={"box_emptiness": 0.0, "box_tightness": 0.0, "box_fill": 0.0, "box_region": 0.0})
    assert not Objective(off, K).needs_volume_batch(prepared[0])
    assert not Objective(tiny_config(objective="pce"), K).needs_volume_batch(prepared[0])
    sized = tiny_dataset("tags+sizes", n=1)
    _, prepared = _prepared(sized, off)
    assert Objective(off, K).needs_volume_batch(prepared[0])


def test_box_ellipse_labels_join_the_voxel_labels_and_the_training_learns_from_them():
    data = tiny_dataset("boxes", n=1)
    plain = tiny_config(box_prior="none")
    ellipse = tiny_config(box_prior="ellipse", box_prior_margin=0.2)
    _, (without,) = _prepared(data, plain)
    _, (with_prior,) = _prepared(data, ellipse)
    assert not bool((without.labels > 0).any())                     # boxes alone: background labels only
    for _, start, stop in with_prior.boxes:                         # each box's centre carries its class
        centre = tuple((a + b - 1) // 2 for a, b in zip(start, stop))
        assert int(with_prior.labels[centre]) in range(1, K)
    known = without.labels != -1
    assert bool((with_prior.labels[known] == without.labels[known]).all())   # labels already there are kept
    result = train(data, tiny_config(box_prior="ellipse", iterations=3, log_every=1))
    assert {"partial_ce", "partial_dice"} <= {k for h in result.history for k in (h.get("terms") or {})}
    with pytest.raises(ValueError, match="box_prior"):
        tiny_config(box_prior="circle")


def test_by_default_per_slice_boxes_become_ellipse_labels_without_box_terms_and_3d_boxes_keep_the_terms():
    """box_prior "auto": per-slice 2D boxes train on their ellipse labels (the box terms collapse on them,
    docs/benchmarks.md); 3D boxes keep the box terms and get only an ellipsoid core (box_prior_margin_3d)."""
    config = tiny_config()
    assert config.box_prior == "auto"
    flat = tiny_dataset("boxes", n=1, per_slice=True)
    thick = tiny_dataset("boxes", n=1)
    _, (per_slice,) = _prepared(flat, config)
    _, (whole,) = _prepared(thick, config)
    assert per_slice.boxes and all(stop[0] - start[0] == 1 for _, start, stop in per_slice.boxes)
    assert bool((per_slice.labels > 0).any()) and not per_slice.box_terms
    core = ellipse_labels(whole.boxes, whole.labels.shape, config.box_prior_margin_3d)
    assert config.box_prior_margin_3d == 0.5 and whole.box_terms
    assert bool((whole.labels > 0).any()) and torch.equal(whole.labels > 0, core > 0)
    objective = Objective(config, K)
    assert not objective.needs_volume_batch(per_slice) and objective.needs_volume_batch(whole)
    assert not {"box_emptiness", "box_tightness", "box_fill"} & set(objective.describe([per_slice]))
    assert {"box_emptiness", "box_tightness", "box_fill", "box_region"} <= set(objective.describe([whole]))
    # "ellipse" draws the labels for any box and leaves the terms to their weights; "none" never draws them
    _, (drawn,) = _prepared(thick, tiny_config(box_prior="ellipse"))
    assert bool((drawn.labels > 0).any()) and drawn.box_terms
    _, (plain,) = _prepared(flat, tiny_config(box_prior="none"))
    assert not bool((plain.labels > 0).any()) and plain.box_terms
    _, (bare,) = _prepared(thick, tiny_config(box_prior="none"))
    assert not bool((bare.labels > 0).any()) and bare.box_terms
    result = train(flat, tiny_config(iterations=3, log_every=1))
    seen = {k for h in result.history for k in (h.get("terms") or {})}
    assert {"partial_ce", "partial_dice"} <= seen and not seen & {"box_emptiness", "box_tightness", "box_fill",
                                                                  "box_region"}


def test_box_region_term_is_the_library_loss_on_the_volume_batch_and_weight_zero_turns_it_off():
    """weights.box_region (0.3 by default) adds the two-phase image energy inside each box where the box terms
    are on (losses.box_region_loss on the volume batch's logits and image); weight 0 leaves it out."""
    thick = tiny_dataset("boxes", n=1)
    off = tiny_config(weights={"box_region": 0.0})
    assert "box_region" not in Objective(off, K).describe(_prepared(thick, off)[1])
    config = tiny_config(weights={"box_region": 2.0})
    trainer = Trainer(thick, config)
    trainer.prepare()
    case = trainer.prepared[0]
    assert "box_region" in trainer.objective.describe([case]) and trainer.objective.needs_volume_batch(case)
    trainer.sampler.augment = False
    batch = trainer.sampler.volume_batch(case)
    logits = torch.randn(1, K, *batch.image.shape[2:])
    terms, _ = trainer.objective.global_terms(logits, batch)
    boxes = trainer.objective._boxes_on_batch(case.boxes, batch, logits.shape[2:])
    expected = 2.0 * L.box_region_loss(logits, batch.image.float(), [boxes])
    torch.testing.assert_close(terms["box_region"], expected)
    result = train(thick, tiny_config(iterations=4, log_every=1, weights={"box_region": 2.0}))
    values = [h["terms"]["box_region"] for h in result.history if "box_region" in (h.get("terms") or {})]
    assert values and all(math.isfinite(v) and 0.0 <= v <= 2.0 + 1e-6 for v in values)


def test_box_mil_term_is_the_library_loss_and_off_by_default():
    """weights.box_mil (0 by default) adds losses.box_mil_loss (every plane of a 3D box, every line of a 2D
    box, is a positive bag) on the volume batch's logits; it is logged with the other terms."""
    thick = tiny_dataset("boxes", n=1)
    assert "box_mil" not in Objective(tiny_config(), K).describe(_prepared(thick, tiny_config())[1])
    trainer = Trainer(thick, tiny_config(weights={"box_mil": 0.5}))
    trainer.prepare()
    case = trainer.prepared[0]
    assert "box_mil" in trainer.objective.describe([case])
    trainer.sampler.augment = False
    batch = trainer.sampler.volume_batch(case)
    logits = torch.randn(1, K, *batch.image.shape[2:])
    terms, _ = trainer.objective.global_terms(logits, batch)
    boxes = trainer.objective._boxes_on_batch(case.boxes, batch, logits.shape[2:])
    torch.testing.assert_close(terms["box_mil"], 0.5 * L.box_mil_loss(logits, [boxes], axis=0, granularity="auto"))
    result = train(thick, tiny_config(iterations=4, log_every=1, weights={"box_mil": 0.5}))
    values = [h["terms"]["box_mil"] for h in result.history if "box_mil" in (h.get("terms") or {})]
    assert values and all(math.isfinite(v) and v >= 0.0 for v in values)

def test_size_ranges_set_the_initial_class_shares_and_nothing_else_does():
    """With size ranges the untrained network's soft sizes start near the ranges, not at 1/K per class."""
    sized = tiny_dataset("scribbles", n=2)
    for case in sized.cases:
        case.annotation = combine(case.annotation, simulate_size_ranges(case.ground_truth, K, margin=0.2))
    trainer = Trainer(sized, tiny_config(weights={"crf": 0.0}))
    trainer.prepare()
    case = trainer.prepared[0]
    with torch.no_grad():
        probs = torch.softmax(trainer.network(case.image[None]).float(), 1)[0]
    shares = probs.flatten(1).mean(1)
    assert case.size_bounds
    for c, (lo, hi) in case.size_bounds.items():
        expected = 0.5 * (lo + hi) / (case.voxel_ml * case.image[0].numel())
        assert expected / 1.5 < float(shares[c]) < expected * 1.5, (c, float(shares[c]), expected)
        assert float(shares[c]) < 0.5 / K     # far below the uniform start
    # Off, or without size ranges: the output layer keeps its seeded random initialisation.
    for data, config in ((sized, tiny_config(size_prior_init=False)), (tiny_dataset("scribbles", n=2), tiny_config())):
        plain = Trainer(data, config)
        plain.prepare()
        fresh = plain.build_network()
        assert torch.equal(plain.network.output_block.conv.conv.bias, fresh.output_block.conv.conv.bias)

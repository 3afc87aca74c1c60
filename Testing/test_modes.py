"""Learning modes: every mode trains end to end on a tiny phantom; the maths checked exactly; options; resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.dataset import Dataset
from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom_dataset, write_phantom_dataset
from WeakSegLib.data.simulate import simulate
from WeakSegLib.training import TrainConfig, semi, train
from WeakSegLib.training.modes import MODES, describe_modes, get_mode
from WeakSegLib.training.trainer import Trainer

K = len(PHANTOM_CLASSES)
SHAPE = (8, 40, 40)
TINY = dict(minutes=None, iterations=6, base_filters=8, batch_size=2, propagate_scribbles=False, seed=1,
            log_every=1)


def tiny_dataset(kind: str, n_annotated: int = 2, n_unannotated: int = 1, seed: int = 0, **options) -> Dataset:
    """Phantoms: the first ``n_annotated`` with simulated ``kind`` annotations, the rest unannotated."""
    data = make_phantom_dataset(n_cases=n_annotated + n_unannotated, seed=seed, shape=SHAPE)
    for i, case in enumerate(data.cases[:n_annotated]):
        case.annotation = simulate(case.ground_truth, K, kind, seed=seed + i, **options)
    return data


def config(mode: str = "standard", **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "mode": mode, **kw})


def terms_seen(result) -> set[str]:
    return {name for entry in result.history for name in entry.get("terms", {})}


# ------------------------------------------------------------------------------------ end to end
END_TO_END = [
    # mode, annotation kind, options, terms the mode must add
    ("pi-model", "scribbles", {}, {"consistency", "consistency_unlabelled"}),
    ("temporal-ensembling", "scribbles", {}, {"consistency_ensemble"}),
    ("mean-teacher", "scribbles", {}, {"consistency", "consistency_unlabelled"}),
    ("vat", "scribbles", {}, {"vat", "vat_unlabelled"}),
    ("entropy-min", "scribbles", {}, {"entropy_min", "entropy_min_unlabelled"}),
    ("pseudo-label", "scribbles", {"threshold": 0.3}, {"pseudo_label", "pseudo_label_unlabelled"}),
    ("fixmatch", "scribbles", {"threshold": 0.3}, {"fixmatch", "fixmatch_unlabelled"}),
    ("mixmatch", "scribbles", {}, {"mixmatch_labelled", "mixmatch_unlabelled"}),
    ("smiler", "partial", {"rounds": 2, "gamma_start": 0.6, "gamma_min": 0.55}, {"smile"}),
    ("cam", "tags+sizes", {"cam_fraction": 0.5}, {"cam_classification", "partial_ce", "tags", "size"}),
    ("box-rounds", "boxes", {"rounds": 2}, {"box_emptiness", "partial_ce"}),
    ("self-training", "scribbles", {"rounds": 2, "threshold": 0.3}, {"partial_ce"}),
]


@pytest.mark.parametrize("mode, kind, options, expected", END_TO_END, ids=[e[0] for e in END_TO_END])
def test_every_mode_trains_end_to_end_on_the_phantom(mode, kind, options, expected):
    data = tiny_dataset(kind)
    result = train(data, config(mode, mode_options=options))
    assert result.status == "completed" and result.iterations == 6
    assert expected <= terms_seen(result), terms_seen(result)
    assert all(math.isfinite(v) for e in result.history for v in e.get("terms", {}).values())
    labels = result.model.predict(data.cases[-1].image).labels.array      # the unannotated volume
    assert labels.shape == SHAPE and set(np.unique(labels)) <= set(range(K))
    assert result.model.config.mode == mode and result.model.summary["mode"] == mode
    rounds = [e for e in result.history if e.get("mode") == mode]
    expected_rounds = {"smiler": 2, "box-rounds": 2, "cam": 1, "self-training": 2}.get(mode, 0)
    assert [e["round"] for e in rounds] == list(range(1, expected_rounds + 1))


@pytest.mark.parametrize("mode, kind, options", [
    ("temporal-ensembling", "scribbles", {}),
    ("mixmatch", "scribbles", {}),
    ("cam", "tags+sizes", {"per_slice": True}),
    ("box-rounds", "boxes", {}),
])
def test_modes_work_with_2d_plans(mode, kind, options):
    data = tiny_dataset(kind, **options)
    result = train(data, config(mode, dims=2, batch_size=4))
    assert result.model.plan.dims == 2 and result.iterations == 6
    assert result.model.predict(data.cases[-1].image).labels.array.shape == SHAPE


def test_cam_pseudo_masks_respect_the_tags_and_feed_the_sampler():
    data = tiny_dataset("tags+sizes", n_unannotated=0)
    trainer = Trainer(data, config("cam", mode_options={"cam_fraction": 0.5, "fg_threshold": 0.3}))
    trainer.fit()
    mode = trainer.mode
    assert mode.rounds_done == 1 and set(mode.labels) == {c.id for c in data.cases}
    for case in trainer.prepared:
        absent = [c for c, present in case.tags.items() if not present]
        assert not any(bool((case.labels == c).any()) for c in absent)
        assert case.has_voxel_labels
    assert {c.id for c in trainer.sampler.local_cases} == {c.id for c in data.cases}   # sampler rebuilt


def test_smiler_rounds_only_add_confident_positives_of_unannotated_classes():
    data = tiny_dataset("partial", n_unannotated=0, drop_rate=0.7)
    trainer = Trainer(data, config("smiler", mode_options={"rounds": 1, "gamma_start": 0.9, "gamma_min": 0.9}))
    trainer.prepare()
    with torch.no_grad():                # a network sure of class 1 everywhere (p1 > 0.99)
        trainer.network.output_block.conv.conv.bias.copy_(torch.tensor([0.0, 20.0, 0.0, 0.0]))
        trainer.network.output_block.conv.conv.weight.zero_()
    before = {c.id: c.labels.clone() for c in trainer.prepared}
    trainer.iteration = 1                # no round before half of the budget ...
    trainer.mode.after_step(trainer)
    assert trainer.mode.rounds_done == 0
    trainer.iteration = 2                # ... the single round is due after step 3 of 6
    trainer.mode.after_step(trainer)
    assert trainer.mode.rounds_done == 1 and trainer.mode.history[0]["gamma"] == 0.9
    assert trainer.mode.history[0]["added_voxels"] > 0
    for case in trainer.prepared:
        old = before[case.id]
        if bool(case.complete[1]):       # class 1 complete here: nothing to add
            assert torch.equal(case.labels, old)
        else:                            # every unknown voxel, and only those, became class 1
            assert torch.equal(case.labels, torch.where(old == UNKNOWN, torch.ones_like(old), old))
    assert trainer.sampler.local_cases and trainer.sampler.cases is trainer.prepared


def test_self_training_labels_the_confident_voxels_of_the_unannotated_volumes_only():
    data = tiny_dataset("scribbles", n_annotated=1, n_unannotated=2)
    trainer = Trainer(data, config("self-training", mode_options={"threshold": 0.9}))
    trainer.prepare()
    with torch.no_grad():                # a network sure of class 2 everywhere (p2 > 0.99)
        trainer.network.output_block.conv.conv.bias.copy_(torch.tensor([0.0, 0.0, 20.0, 0.0]))
        trainer.network.output_block.conv.conv.weight.zero_()
    annotated = trainer.prepared[0].labels.clone()
    assert [c.unlabelled for c in trainer.prepared] == [False, True, True]
    assert [c.id for c in trainer.sampler.local_cases] == [trainer.prepared[0].id]
    trainer.iteration = 2                # the single round is due after step 3 of 6
    trainer.mode.after_step(trainer)
    report = trainer.mode.history[0]
    assert trainer.mode.rounds_done == 1 and report["threshold"] == 0.9
    assert torch.equal(trainer.prepared[0].labels, annotated)             # the annotated volume is untouched
    for case in trainer.prepared[1:]:
        assert torch.equal(case.labels, torch.full_like(case.labels, 2))
    assert report["labelled"] == report["voxels"] == sum(c.labels.numel() for c in trainer.prepared[1:])
    assert len(trainer.sampler.local_cases) == 3                          # the sampler draws them now
    # An unsure network labels nothing: every voxel stays unknown.
    with torch.no_grad():
        trainer.network.output_block.conv.conv.bias.zero_()
    trainer.mode.run_round(trainer, 1)
    assert all(bool((c.labels == UNKNOWN).all()) for c in trainer.prepared[1:])
    with pytest.raises(ValueError, match="unannotated volumes"):
        train(tiny_dataset("scribbles", n_unannotated=0), config("self-training", iterations=1))


def test_batch_share_splits_the_planned_batch_between_annotated_and_unannotated_patches():
    data = tiny_dataset("scribbles", n_annotated=2, n_unannotated=2)
    trainer = Trainer(data, config("mean-teacher", batch_size=4, mode_options={"batch_share": 0.25}))
    trainer.prepare()
    assert trainer.sampler.batch_sizes() == (3, 1)
    assert trainer.sampler.patch_batch().image.shape[0] == 3
    unlabelled = trainer.sampler.unlabelled_batch()
    assert unlabelled.image.shape[0] == 1 and set(unlabelled.case_ids) <= {c.id for c in trainer.prepared[2:]}
    trainer.sampler.unlabelled_share = 0.9                                  # at least one annotated patch
    assert trainer.sampler.batch_sizes() == (1, 3)
    trainer.sampler.unlabelled_share = 0.0                                  # default: two full batches
    assert trainer.sampler.batch_sizes() == (4, 4)
    # One student pass holds both kinds of patches (the teacher's pass is not the trainer's forward).
    trainer = Trainer(data, config("mean-teacher", batch_size=2, mode_options={"batch_share": 0.5}))
    trainer.prepare()
    passes, forward = [], trainer.forward
    trainer.forward = lambda x: passes.append(x.shape[0]) or forward(x)
    _, terms, _ = trainer.train_step()
    assert passes == [2] and {"consistency", "consistency_unlabelled"} <= set(terms)
    trainer.forward = forward
    result = train(data, config("mean-teacher", batch_size=2, mode_options={"batch_share": 0.5}))
    assert {"consistency", "consistency_unlabelled"} <= terms_seen(result) and result.iterations == 6
    for mode in ("pi-model", "fixmatch"):       # the pi-model joins the pass too; FixMatch keeps its own
        result = train(data, config(mode, batch_size=2, mode_options={"batch_share": 0.5, **(
            {"threshold": 0.3} if mode == "fixmatch" else {})}))
        assert result.iterations == 6 and any(t.endswith("_unlabelled") for t in terms_seen(result))
    with pytest.raises(ValueError, match="batch_share"):
        get_mode("mean-teacher", {"batch_share": 1.0})


def test_source_free_adaptation_fine_tunes_a_trained_model_on_unannotated_volumes(tmp_path):
    source = tiny_dataset("scribbles", n_annotated=1, n_unannotated=0)
    train(source, config(iterations=3), tmp_path / "source")
    target = make_phantom_dataset(n_cases=2, seed=7, shape=SHAPE)      # a "new site": no annotation at all
    target.priors["class_ratio"] = [0.85, 0.08, 0.05, 0.02]
    result = train(target, config("source-free", iterations=4, learning_rate=5e-4,
                                  init_model=str(tmp_path / "source")))
    assert {"entropy_unlabelled", "class_ratio_unlabelled"} <= terms_seen(result)
    start = torch.load(tmp_path / "source" / "weights.pt", weights_only=True)
    adapted = result.model.network.state_dict()
    assert any(not torch.equal(start[k], adapted[k].cpu()) for k in start)
    assert result.model.predict(target.cases[0].image).labels.array.shape == SHAPE
    # The size-range form of the prior: each foreground class's share within ±ratio_margin, relative.
    relative = train(target, config("source-free", iterations=2, learning_rate=5e-4,
                                    init_model=str(tmp_path / "source"),
                                    mode_options={"ratio_loss": "relative", "ratio_margin": 0.1}))
    assert "class_ratio_unlabelled" in terms_seen(relative)
    # TENT: only the normalisation layers' scale and shift move.
    tent = train(target, config("source-free", iterations=2, learning_rate=5e-3, init_model=str(tmp_path / "source"),
                                mode_options={"parameters": "norm"}))
    net = tent.model.network
    norm = {f"{name}.{p}" for name, m in net.named_modules(remove_duplicate=False)
            if isinstance(m, torch.nn.modules.batchnorm._NormBase) for p, _ in m.named_parameters(recurse=False)}
    moved = {k for k, v in net.state_dict().items() if not torch.equal(start[k], v.cpu())}
    assert norm and moved and moved <= norm, sorted(moved - norm)[:5]
    mode = get_mode("source-free", {"ratio_loss": "relative", "ratio_margin": 0.5})
    mode.prior = torch.tensor([0.5, 0.3, 0.1, 0.1])
    logits = torch.zeros(1, 4, 2, 5, 10)     # 100 voxels, 25 per class; ranges [15, 45], [5, 15], [5, 15]
    # classes 2 and 3: (25 - 15) / 15 = 2/3 over the upper bound -> ((2/3)² + (2/3)² + 0) / 3
    assert float(mode.ratio_term(logits)) == pytest.approx(8 / 27)
    mode.ratio_loss = "kl"                   # KL(q || prior) with q = 1/4 each
    expected = sum(0.25 * math.log(0.25 / p) for p in (0.5, 0.3, 0.1, 0.1))
    assert float(mode.ratio_term(logits)) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="ratio_loss"):
        get_mode("source-free", {"ratio_loss": "l2"})
    # The prior can also come from the options; a missing prior or no unannotated volume is refused.
    target.priors.clear()
    with pytest.raises(ValueError, match="class-ratio prior"):
        train(target, config("source-free", iterations=1))
    with pytest.raises(ValueError, match="unannotated volumes"):
        train(source, config("source-free", iterations=1, mode_options={"class_ratio": [0.9, 0.05, 0.03, 0.02]}))


def test_relabeling_and_cam_modes_refuse_data_without_their_annotation():
    data = tiny_dataset("scribbles")
    for mode, match in (("cam", "tags"), ("box-rounds", "box")):
        with pytest.raises(ValueError, match=match):
            train(data, config(mode, iterations=1))


# ------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("mode, kind", [("mean-teacher", "scribbles"), ("temporal-ensembling", "scribbles"),
                                        ("box-rounds", "boxes")])
def test_a_resumed_run_gives_the_same_model(tmp_path, mode, kind):
    data = tiny_dataset(kind)
    cfg = config(mode, checkpoint_every=3)
    train(data, cfg, tmp_path / "ref")
    calls = []
    stop_after_3 = lambda: calls.append(1) or len(calls) > 3    # noqa: E731
    first = train(data, cfg, tmp_path / "resumed", should_stop=stop_after_3)
    assert first.status == "cancelled" and first.iterations == 3
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert state["mode"], "the mode's state is in the checkpoint"
    train(data, cfg, tmp_path / "resumed", resume=True)
    a = torch.load(tmp_path / "ref" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "weights.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ref_mode = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["mode"]
    resumed_mode = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["mode"]
    assert ref_mode.keys() == resumed_mode.keys()
    for k in ref_mode:
        assert torch.equal(torch.as_tensor(ref_mode[k]), torch.as_tensor(resumed_mode[k])), k


def test_mean_teacher_state_dict_round_trip_and_final_weights(tmp_path):
    data = tiny_dataset("scribbles")
    trainer = Trainer(data, config("mean-teacher", iterations=3, mode_options={"decay": 0.9}))
    trainer.fit()
    state = trainer.mode.state_dict()
    assert state["step"] == 3 and any(k.startswith("teacher.") for k in state)
    torch.save(state, tmp_path / "mode.pt")
    loaded = torch.load(tmp_path / "mode.pt", weights_only=True)
    fresh = get_mode("mean-teacher", {"decay": 0.9})
    fresh.load_state_dict(loaded)                      # before setup: kept until the teacher exists
    again = fresh.state_dict()
    assert again.keys() == state.keys() and all(torch.equal(torch.as_tensor(again[k]), torch.as_tensor(state[k]))
                                                for k in state)
    # The teacher differs from the student, and final_weights="teacher" saves the teacher.
    teacher = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
    student = trainer.network.state_dict()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)
    result = train(data, config("mean-teacher", iterations=3, mode_options={"decay": 0.9,
                                                                            "final_weights": "teacher"}))
    final = result.model.network.state_dict()
    assert all(torch.equal(teacher[k], final[k]) for k in teacher)


# ------------------------------------------------------------------------------------ options
def test_unknown_mode_and_options_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="available: .*mean-teacher"):
        get_mode("mean_teacher")
    with pytest.raises(ValueError, match=r"no option\(s\) \['decy'\]; its options are: batch_share, decay, "
                                         r"final_weights"):
        get_mode("mean-teacher", {"decy": 0.9})
    with pytest.raises(ValueError, match="options are: none"):
        get_mode("standard", {"weight": 1.0})
    with pytest.raises(TypeError, match="'decay' must be a finite number"):
        get_mode("mean-teacher", {"decay": "high"})
    with pytest.raises(ValueError, match="'decay' must be in"):
        get_mode("mean-teacher", {"decay": 1.5})
    with pytest.raises(ValueError, match="'final_weights' must be one of"):
        get_mode("mean-teacher", {"final_weights": "best"})
    with pytest.raises(ValueError, match="'gamma_min'"):
        get_mode("smiler", {"gamma_min": 0.4})
    with pytest.raises(TypeError, match="true or false"):
        get_mode("pi-model", {"on_labelled": 1})
    assert get_mode("smiler", {"rounds": 3.0}).rounds == 3          # JSON numbers
    data = tiny_dataset("scribbles", n_unannotated=0)
    with pytest.raises(ValueError, match="Unknown training mode"):
        train(data, config("nope", iterations=1))


def test_every_mode_documents_its_paper_and_knobs():
    described = {d["name"]: d for d in describe_modes()}
    assert set(described) == set(MODES) and len(MODES) == 14
    for name, cls in MODES.items():
        doc = " ".join((cls.__doc__ or "").split())
        assert cls.paper and cls.summary and described[name]["family"]
        for knob, default in cls.defaults.items():
            assert f"``{knob}``" in doc, (name, knob)
            assert f"``{knob}`` = {json.dumps(default)}" in doc, (name, knob, json.dumps(default))


def test_cli_selects_the_mode_and_its_options_from_the_config(tmp_path):
    from WeakSegLib.cli import main

    write_phantom_dataset(tmp_path / "data", n_cases=2, kind="scribbles", shape=SHAPE)
    manifest = json.loads((tmp_path / "data" / "dataset.json").read_text())
    manifest["cases"][1].pop("annotation")                 # the second volume is unannotated
    manifest["cases"][1].pop("sidecar")
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(manifest))
    cfg = {**TINY, "iterations": 3, "mode_options": {"decay": 0.9, "rampup": 0.0}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = ["train", "--dataset", str(tmp_path / "data"), "--config", str(tmp_path / "cfg.json"),
            "--progress", "none"]
    assert main(args + ["--out", str(tmp_path / "model"), "--mode", "mean-teacher"]) == 0
    saved = json.loads((tmp_path / "model" / "model.json").read_text())
    assert saved["config"]["mode"] == "mean-teacher" and saved["config"]["mode_options"]["decay"] == 0.9
    assert main(args + ["--out", str(tmp_path / "bad"), "--mode", "fixmatch"]) == 1     # 'decay' is not a knob


# ------------------------------------------------------------------------------------ the maths
def test_sigmoid_rampup_and_ema_decay_schedules():
    assert semi.sigmoid_rampup(0.0, 0.3) == pytest.approx(math.exp(-5))
    assert semi.sigmoid_rampup(0.15, 0.3) == pytest.approx(math.exp(-5 * 0.25))
    assert semi.sigmoid_rampup(0.3, 0.3) == 1.0 and semi.sigmoid_rampup(0.9, 0.3) == 1.0
    assert semi.sigmoid_rampup(0.0, 0.0) == 1.0
    assert [semi.ema_decay(s, 0.99) for s in (0, 1, 3)] == [0.0, 0.5, 0.75]
    assert semi.ema_decay(10_000, 0.99) == 0.99


def test_ema_update_is_exact():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    s0 = [p.detach().clone() for p in student.parameters()]
    semi.ema_update(teacher, student, 0.9)
    for t, a, b in zip(teacher.parameters(), t0, s0):
        torch.testing.assert_close(t.detach(), 0.9 * a + 0.1 * b)
    semi.ema_update(teacher, student, 0.0)                # decay 0: the teacher is the student
    for t, b in zip(teacher.parameters(), s0):
        assert torch.equal(t.detach(), b)


def test_sharpen_mixup_and_beta():
    p = torch.tensor([[0.6, 0.4]]).view(1, 2, 1, 1)
    torch.testing.assert_close(semi.sharpen(p, 0.5).flatten(), torch.tensor([0.36, 0.16]) / 0.52)
    torch.testing.assert_close(semi.sharpen(p, 1.0), p)
    assert semi.sharpen(p, 0.01).flatten()[0] > 0.999
    xa, xb = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    ya = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    yb = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    x, y, lam = semi.mixup(xa, ya, xb, yb, 0.3)           # lambda' = max(0.3, 0.7)
    assert lam == 0.7
    torch.testing.assert_close(x, torch.full_like(x, 0.3))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(y.sum(1), torch.ones(1, 2, 2))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws = [semi.sample_beta(0.75, g1) for _ in range(5)]
    assert draws == [semi.sample_beta(0.75, g2) for _ in range(5)] and all(0 <= d <= 1 for d in draws)


def test_masked_cross_entropy_is_normalised_by_its_scope_and_perturbations_are_seeded():
    logits = torch.zeros(1, 2, 1, 4)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    mask = torch.tensor([[[True, False, False, False]]])
    assert semi.masked_cross_entropy(logits, target, mask).item() == pytest.approx(math.log(2) / 4)
    scope = torch.tensor([[[True, True, False, False]]])
    assert semi.masked_cross_entropy(logits, target, mask, scope).item() == pytest.approx(math.log(2) / 2)
    x = torch.ones(1, 1, 4, 8, 8)
    out = semi.cutout(x, torch.Generator().manual_seed(0), 0.5)
    assert int((out == 0).sum()) == 2 * 4 * 4
    a = semi.intensity_perturbation(x, torch.Generator().manual_seed(3))
    b = semi.intensity_perturbation(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    d = semi.rms_normalise(torch.randn(2, 1, 3, 4, 4))
    torch.testing.assert_close(d.pow(2).flatten(1).mean(1), torch.ones(2))


def test_soft_target_losses_match_hand_computed_values_and_gradients():
    # (B, K, y, x) = (1, 2, 2, 1): voxel 0 predicts (0.8, 0.2) for target (1, 0), voxel 1 (0.5, 0.5) for (0, 1).
    probs = torch.tensor([[[[0.8], [0.5]], [[0.2], [0.5]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0], [0.0]], [[0.0], [1.0]]]], dtype=torch.float64)
    # Voxel 0: ((0.8 - 1)^2 + (0.2 - 0)^2) / 2 = 0.04; voxel 1: ((0.5 - 0)^2 + (0.5 - 1)^2) / 2 = 0.25.
    assert semi.soft_target_mse(probs, target).item() == pytest.approx((0.04 + 0.25) / 2)
    mask = torch.tensor([[[True], [False]]])
    assert semi.soft_target_mse(probs, target, mask).item() == pytest.approx(0.04)
    assert semi.soft_target_mse(probs, target, torch.zeros_like(mask)).item() == 0.0
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4))
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    torch.testing.assert_close(semi.soft_cross_entropy(logits, onehot),
                               torch.nn.functional.cross_entropy(logits, labels))
    soft = torch.softmax(torch.randn(2, 3, 4, 4, dtype=torch.float64), 1)
    voxels = torch.rand(2, 4, 4) > 0.5
    (grad,) = torch.autograd.grad(semi.soft_cross_entropy(logits, soft, voxels), logits)   # runs in float32
    expected = (torch.softmax(logits, 1) - soft) * voxels.unsqueeze(1) / voxels.sum()
    torch.testing.assert_close(grad, expected.detach(), atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda z: semi.soft_target_mse(torch.softmax(z, 1), soft, voxels), (logits,))


def test_smiler_threshold_schedule_and_relabeling_rule():
    assert [round(semi.smiler_threshold(t, 0.95, 0.05, 0.8), 6) for t in range(5)] == [0.95, 0.9, 0.85, 0.8, 0.8]
    labels = torch.tensor([[UNKNOWN, UNKNOWN, 2, UNKNOWN, UNKNOWN, 0]])        # (1, 6) "volume"
    probs = torch.tensor([
        [0.05, 0.05, 0.05, 0.95, 0.30, 0.05],      # background: never added, even at 0.95
        [0.92, 0.05, 0.92, 0.03, 0.60, 0.90],      # class 1: incomplete
        [0.03, 0.90, 0.03, 0.02, 0.10, 0.05],      # class 2: complete in this volume -> never added
    ]).unsqueeze(1)
    complete = torch.tensor([False, False, True])
    out, added = semi.smiler_relabel(labels, probs, complete, gamma=0.9)
    assert out.tolist() == [[1, UNKNOWN, 2, UNKNOWN, UNKNOWN, 0]] and added == 1
    out, added = semi.smiler_relabel(labels, probs, complete, gamma=0.55)
    assert out.tolist() == [[1, UNKNOWN, 2, UNKNOWN, 1, 0]] and added == 2
    with pytest.raises(ValueError, match="gamma"):
        semi.smiler_relabel(labels, probs, complete, gamma=0.5)


def test_cam_normalisation_and_pseudo_masks():
    cam = torch.tensor([[[1.0, 3.0, 5.0]], [[2.0, 2.0, 2.0]]])                # (K=2, 1, 3)
    torch.testing.assert_close(semi.normalise_cam(cam), torch.tensor([[[0.0, 0.5, 1.0]], [[0.0, 0.0, 0.0]]]))
    # K = 3: class 1 present, class 2 absent; 5 voxels.
    norm = torch.tensor([[0.0] * 5,
                         [0.9, 0.7, 0.4, 0.1, 0.0],
                         [0.0, 0.9, 0.9, 0.9, 0.0]]).view(3, 1, 5)
    status = torch.tensor([-1, 1, 0]).view(3, 1, 1)
    out = semi.cam_pseudo_labels(norm, status, fg_threshold=0.6, bg_threshold=0.2)
    assert out.flatten().tolist() == [1, 1, UNKNOWN, 0, 0]                     # class 2 (absent) never assigned
    capped = semi.cam_pseudo_labels(norm, status, 0.6, 0.2, max_voxels={1: 1})
    assert capped.flatten().tolist() == [1, UNKNOWN, UNKNOWN, 0, 0]            # the most activated voxel only
    unknown_tag = semi.cam_pseudo_labels(norm, torch.tensor([-1, 1, -1]).view(3, 1, 1), 0.6, 0.2)
    assert unknown_tag.flatten().tolist() == [1, 1, UNKNOWN, UNKNOWN, 0]       # class 2 may be there: no bg


def test_box_round_labels():
    probs = torch.zeros(2, 1, 1, 10)
    probs[0] = 1.0
    probs[:, 0, 0, 3:6] = torch.tensor([0.1, 0.9]).view(2, 1)                  # predicted object at 3..5
    out = semi.box_round_labels(probs, [(1, (0, 0, 2), (1, 1, 8))]).flatten().tolist()
    assert out == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    out = semi.box_round_labels(probs, [(1, (0, 0, 2), (1, 1, 8))], background_in_box=False).flatten().tolist()
    assert out == [0, 0, UNKNOWN, 1, 1, 1, UNKNOWN, UNKNOWN, 0, 0]
    # A box the prediction barely fills is reset to its core.
    out = semi.box_round_labels(probs, [(1, (0, 0, 0), (1, 1, 10))], min_fill=0.5, core_scale=0.4)
    assert out.flatten().tolist() == [UNKNOWN] * 3 + [1] * 4 + [UNKNOWN] * 3


def test_the_modes_page_lists_every_mode_with_its_knobs_and_defaults():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "learning-modes.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in page.splitlines() if line.startswith("| `")}
    assert set(rows) == set(MODES)
    for name, cls in MODES.items():
        for knob, default in cls.defaults.items():
            assert f"`{knob}` {json.dumps(default)}" in rows[name], (name, knob)

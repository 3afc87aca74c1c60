"""Inference: the precision policy, the sliding-window predictor (2D and 3D plans, flip TTA), post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from WeakSegLib.data.phantom import make_phantom_dataset
from WeakSegLib.inference import Predictor, keep_largest_component
from WeakSegLib.model import Model
from WeakSegLib.networks.planning import build_network, plan_training
from WeakSegLib.networks.precision import autocast, autocast_forward, use_bf16
from WeakSegLib.training import TrainConfig
from WeakSegLib.transforms.preprocessing import Preprocessing
from WeakSegLib.utils import cpu_supports_bf16

SHAPE = (8, 40, 40)


@pytest.mark.parametrize("device, requested, expected", [
    ("cpu", None, cpu_supports_bf16()), ("cpu", True, cpu_supports_bf16()), ("cpu", False, False),
    ("cuda", None, True), ("cuda", True, True), ("cuda", False, False), ("mps", True, False),
])
def test_bf16_is_used_where_native_unless_refused(device, requested, expected):
    assert use_bf16(torch.device(device), requested) is expected
    assert use_bf16(device, requested) is expected


def test_autocast_forward_returns_float32_and_is_exact_without_autocast():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = autocast_forward(net, x, torch.device("cpu"), bf16=True)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 8, 8)
    assert torch.equal(out, net(x).float())
    with autocast("cpu", False):                     # refused: the CPU stays in float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("cpu", None):                      # the default: bf16 where the CPU computes it natively
        expected = torch.bfloat16 if cpu_supports_bf16() else torch.float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == expected


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def planned(request):
    data = make_phantom_dataset(n_cases=1, seed=0, shape=SHAPE)
    plan = plan_training(data, TrainConfig(dims=request.param, base_filters=8, batch_size=2, iterations=1))
    torch.manual_seed(0)
    return data, plan, build_network(plan)


def test_predictor_logits_and_probabilities_agree_and_keep_the_network_mode(planned):
    _, plan, net = planned
    image = torch.randn(plan.in_channels, *SHAPE)
    net.train()
    predictor = Predictor(net, plan, bf16=True)
    assert predictor.device == torch.device("cpu")
    logits = predictor.logits(image)
    assert logits.shape == (plan.num_classes, *SHAPE) and logits.dtype == torch.float32
    assert net.training                               # eval during the passes, then back to train
    probs = predictor.probabilities(image)
    torch.testing.assert_close(probs, torch.softmax(logits, 0), atol=1e-6, rtol=1e-5)
    assert not logits.requires_grad and net.training


def test_flip_tta_averages_the_image_and_its_flips(planned):
    _, plan, net = planned
    image = torch.randn(plan.in_channels, *SHAPE)
    predictor = Predictor(net, plan, bf16=False)
    axes = [2, 3] if plan.dims == 2 else [1, 2, 3]
    flips = [[a] for a in axes] + [axes[-2:]]
    expected = predictor.probabilities(image)
    for f in flips:
        expected = expected + torch.flip(predictor.probabilities(torch.flip(image, f)), f)
    expected = expected / (1 + len(flips))
    tta = predictor.probabilities(image, tta=True)
    torch.testing.assert_close(tta, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tta.sum(0), torch.ones(SHAPE), atol=1e-5, rtol=0)


def test_model_probabilities_come_from_the_predictor(planned):
    data, plan, net = planned
    model = Model(net, plan, Preprocessing("MR", plan.dims, plan.target_spacing_zyx), data.classes)
    image = model.preprocessing.to_network(data.cases[0].image)
    net.train()
    probs = model.network_probabilities(image, tta=True)
    assert not net.training                           # a model's network is left in eval mode
    torch.testing.assert_close(probs, Predictor(net, plan).probabilities(image, tta=True), atol=0, rtol=0)
    labels = model.predict(data.cases[0].image).labels.array
    assert labels.shape == SHAPE and labels.dtype == np.int16


def test_keep_largest_component_removes_the_smaller_pieces_of_each_class():
    labels = np.zeros((3, 6, 6), dtype=np.int16)
    labels[0, :2, :2] = 1          # 4 voxels of class 1: kept
    labels[2, 5, 5] = 1            # 1 voxel of class 1: removed
    labels[1, 4, 0] = 2            # the only piece of class 2: kept
    out = keep_largest_component(labels)
    assert out.dtype == labels.dtype and out[2, 5, 5] == 0
    assert (out == 1).sum() == 4 and (out == 2).sum() == 1
    assert labels[2, 5, 5] == 1    # the input is not modified


def test_object_rule_keeps_each_class_inside_the_largest_object_and_a_separate_organ_anywhere():
    labels = np.zeros((2, 12, 12), dtype=np.int16)
    labels[:, 1:7, 0:4] = 1        # the object: classes 1 and 2 touch (48 + 8 voxels)
    labels[:, 2:6, 4] = 2
    labels[:, 8:12, 8:12] = 2      # a larger stray piece of class 2 away from the object (32 voxels)
    labels[0, 0, 11] = 3           # class 3 lies only outside the object: it keeps its largest piece
    labels[0, 0, 8:10] = 3
    by_class = keep_largest_component(labels)
    assert (by_class[:, 8:12, 8:12] == 2).all() and (by_class[:, 2:6, 4] == 0).all()   # the stray piece wins
    by_object = keep_largest_component(labels, "object")
    assert (by_object[:, 2:6, 4] == 2).all() and (by_object[:, 8:12, 8:12] == 0).all()
    assert (by_object == 1).sum() == 48 and (by_object == 3).sum() == 2 and by_object[0, 0, 11] == 0
    assert (keep_largest_component(labels, None) == labels).all()
    with pytest.raises(ValueError, match="is not a rule; use one of class, object"):
        keep_largest_component(labels, "heart")


def test_the_object_is_where_the_classes_meet_not_a_larger_blob_of_mostly_one_class():
    # A poorly trained model's false blob (class 1 with a rim of 2 and 3) is larger than the true
    # object, where all three classes meet in similar amounts: the object rule keeps the true one.
    labels = np.zeros((2, 20, 30), dtype=np.int16)
    labels[:, 0:6, 0:6] = 1        # the true object: 72 + 72 + 72 voxels
    labels[:, 0:6, 6:12] = 2
    labels[:, 6:12, 0:6] = 3
    labels[:, 10:20, 14:30] = 1    # the blob: 320 voxels, 292 of them class 1
    labels[:, 10, 14:21] = 2
    labels[:, 11, 14:21] = 3
    out = keep_largest_component(labels, "object")
    assert (out[:, :12, :12] == labels[:, :12, :12]).all() and not out[:, 10:, 14:].any()
    # With one class the object is the largest component, as before.
    single = (labels > 0).astype(np.int16)
    assert keep_largest_component(single, "object")[:, 10:, 14:].all()


def test_inside_rule_keeps_the_piece_the_outer_class_encloses_not_the_largest():
    from WeakSegLib.inference.postprocessing import ComponentRule, component_rule

    labels = np.zeros((2, 20, 30), dtype=np.int16)
    labels[:, 2:9, 2:9] = 2        # a ring of class 2 (the myocardium) ...
    labels[:, 4:7, 4:7] = 3        # ... around a small piece of class 3 (the true LV, 18 voxels)
    labels[:, 9:18, 2:28] = 1      # class 1 (the RV, touching the ring: one object) ...
    labels[:, 12:16, 16:24] = 3    # ... holding a larger piece labelled class 3 (64 voxels)
    labels[0, 0, 0] = 3            # a speck of class 3 touching class 2 only: too small to be a candidate
    labels[0, 1, 0] = 2
    by_size = keep_largest_component(labels, "class")
    assert (by_size[:, 12:16, 16:24] == 3).all() and (by_size[:, 4:7, 4:7] == 0).all()
    rule = ComponentRule("class", ((3, 2),))
    inside = keep_largest_component(labels, rule)
    assert (inside[:, 4:7, 4:7] == 3).all() and (inside == 3).sum() == 18
    assert (inside[:, 12:16, 16:24] == 0).all() and inside[0, 0, 0] == 0
    assert ((inside == 1) == (labels == 1)).all()                   # the other classes as by "class"
    both = keep_largest_component(labels, ComponentRule("object", ((3, 2),)))
    assert (both == 3).sum() == 18 and (keep_largest_component(labels, "object") == 3).sum() == 64
    assert component_rule(rule.to_json()) == rule and component_rule("object").to_json() == "object"
    assert component_rule(True) == ComponentRule("class")
    with pytest.raises(ValueError, match="two different foreground classes"):
        ComponentRule("class", ((3, 3),))
    with pytest.raises(ValueError, match="inside one other class only"):
        ComponentRule("class", ((3, 2), (3, 1)))


def test_parse_inside_reads_names_and_numbers_and_names_the_classes_when_wrong():
    from WeakSegLib.inference.postprocessing import ComponentRule, parse_inside, rule_with_inside

    names = ["Background", "RV", "Myo", "LV"]
    assert parse_inside(["LV:Myo"], names) == ((3, 2),) == parse_inside(["lv:2"], names)
    assert rule_with_inside("object", ["LV:Myo"], names) == ComponentRule("object", ((3, 2),))
    assert rule_with_inside(None, ["LV:Myo"], names) == ComponentRule("class", ((3, 2),))
    assert rule_with_inside("object", [], names) == "object"
    for spec, message in (("LV", "must be INNER:OUTER"), ("LV:Heart", "'Heart' is not a foreground class; the "
                                                                     "classes are 1 RV, 2 Myo, 3 LV"),
                          ("Background:Myo", "'Background' is not a foreground class"), ("4:2", "'4' is not")):
        with pytest.raises(ValueError, match=message):
            parse_inside([spec], names)

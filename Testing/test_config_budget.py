"""The one budget rule of every door: minutes alone, iterations alone (no time limit), both, neither (2 min)."""

from __future__ import annotations

import argparse
import json

import pytest

from WeakSegLib.cli.demo import DEMO_ITERATIONS
from WeakSegLib.cli.options import config_from_args
from WeakSegLib.config import DEFAULT_MINUTES, TrainConfig


@pytest.mark.parametrize("given, expected", [
    ({}, (DEFAULT_MINUTES, None)),
    ({"minutes": 0.5}, (0.5, None)),
    ({"iterations": 150}, (None, 150)),
    ({"minutes": 1.0, "iterations": 150}, (1.0, 150)),
])
def test_train_config_budget_rule(given, expected):
    config = TrainConfig(**given)
    assert (config.minutes, config.iterations) == expected
    assert (TrainConfig.from_dict(given).minutes, TrainConfig.from_dict(given).iterations) == expected
    # A saved config reloads to the same budget.
    again = TrainConfig.from_dict(config.to_dict())
    assert (again.minutes, again.iterations) == expected


def test_from_layers_a_later_budget_replaces_both():
    config = TrainConfig.from_layers({"minutes": 5.0, "seed": 3}, {"iterations": 40}, None, {"device": "cpu"})
    assert (config.minutes, config.iterations, config.seed, config.device) == (None, 40, 3, "cpu")
    config = TrainConfig.from_layers({"iterations": 40}, {"learning_rate": 1e-3})
    assert (config.minutes, config.iterations, config.learning_rate) == (None, 40, 1e-3)
    with pytest.raises(ValueError, match="Unknown training option"):
        TrainConfig.from_layers({"minuts": 2})


def test_worker_job_config_with_iterations_has_no_time_limit():
    # The worker builds its config with TrainConfig.from_dict: a job asking for 150 iterations runs 150.
    config = TrainConfig.from_dict({"iterations": 150, "seed": 1})
    assert config.minutes is None and config.iterations == 150


def test_cli_budget_defaults_apply_only_when_no_budget_is_given(tmp_path):

    def args(config=None, minutes=None, iterations=None):
        return argparse.Namespace(config=config, minutes=minutes, iterations=iterations, device=None, seed=None,
                                  mode=None, objective=None)

    weights_only = tmp_path / "weights.json"
    weights_only.write_text(json.dumps({"weights": {"crf": 1.0}}))
    with_iterations = tmp_path / "iterations.json"
    with_iterations.write_text(json.dumps({"iterations": 7}))
    demo = (None, DEMO_ITERATIONS)
    # The demo keeps its iteration budget when a config file sets other options only (it fell back to 2 minutes).
    config = config_from_args(args(str(weights_only)), default_budget=demo)
    assert (config.minutes, config.iterations, config.weights.crf) == (None, DEMO_ITERATIONS, 1.0)
    assert (config_from_args(args(), default_budget=demo).iterations) == DEMO_ITERATIONS
    assert config_from_args(args(str(with_iterations)), default_budget=demo).iterations == 7
    assert config_from_args(args(minutes=0.5), default_budget=demo).minutes == 0.5
    assert (config_from_args(args(str(weights_only))).minutes, config_from_args(args()).minutes) == (2.0, 2.0)

"""CPU speed settings: bf16 autocast where the CPU computes it natively, threads from the cores actually free."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from WeakSegLib.data.phantom import make_phantom_dataset
from WeakSegLib.data.simulate import simulate
from WeakSegLib.networks.precision import autocast_forward, use_bf16
from WeakSegLib.training import TrainConfig, Trainer
from WeakSegLib.utils import choose_num_threads, cpu_supports_bf16, usable_cores

needs_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bfloat16 "
                                "(AVX512-BF16 or AMX): WeakSeg trains in float32 here")


def test_bf16_policy_follows_the_request_and_the_hardware():
    assert use_bf16("cpu", True) == cpu_supports_bf16()
    assert use_bf16("cpu", None) == cpu_supports_bf16()   # on by default where the CPU computes it natively
    assert not use_bf16("cpu", False)
    assert not use_bf16("meta", True)


@needs_bf16
def test_bf16_cpu_training_runs_with_float32_losses():
    data = make_phantom_dataset(n_cases=2, seed=0, shape=(8, 32, 32))
    for i, case in enumerate(data.cases):
        case.annotation = simulate(case.ground_truth, data.num_classes, "scribbles", seed=i)
    config = TrainConfig(iterations=4, device="cpu", seed=0, dims=2, patch_size=[32, 32], batch_size=2,
                         base_filters=8, bf16=True, num_threads=1)
    dtypes = []

    class RecordOutputDtype:                       # a trainer callback: hook the network once it is built
        def on_fit_start(self, trainer):
            last = list(trainer.network.modules())[-1]
            last.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))

    trainer = Trainer(data, config, callbacks=[RecordOutputDtype()])
    result = trainer.fit()
    assert result.iterations == 4
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)          # the network ran in bf16
    assert result.model.summary["precision"] == "bf16 autocast"          # and the model says so
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in trainer.network.parameters())
    x = torch.randn(1, 1, 32, 32)
    assert autocast_forward(trainer.network, x, "cpu", True).dtype == torch.float32   # losses see float32


def test_thread_choice_leaves_busy_cores_alone():
    cores = usable_cores()
    assert 1 <= choose_num_threads() <= cores
    assert choose_num_threads(reserve=cores) == 1                      # never fewer than one
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(min(cores - 1, 2))]
    try:
        if busy:
            import time

            time.sleep(0.5)
            assert choose_num_threads() <= max(1, cores - len(busy))
    finally:
        for process in busy:
            process.kill()
            process.wait()


def test_explicit_threads_and_omp_num_threads_win_over_the_choice():
    code = ("import torch; from WeakSegLib.utils import configure_threads; "
            "print(configure_threads(None), configure_threads(1))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_the_worker_leaves_a_core_to_the_gui_on_larger_machines():
    from WeakSegLib.jobs.worker import GUI_CORES, GUI_CORES_FROM, worker_threads

    cores = usable_cores()
    threads = worker_threads()
    assert 1 <= threads <= (cores - GUI_CORES if cores >= GUI_CORES_FROM else cores)

"""The GPU path, checked in a few minutes: training throughput, memory, a 256^3 prediction, Dice on ACDC.

1. Training-step throughput of the plans WeakSeg makes on this device for ACDC (2D) and the left
   atrium (3D), bf16 autocast: iterations/s, TFLOP/s (FLOPs counted by ``torch.utils.flop_counter``)
   against the GPU's dense bf16 peak when the GPU is known, peak GPU memory.
2. Prediction of a 256^3 volume with the LA 3D plan's network (sliding window, bf16): seconds
   (target < 2 s on a GPU).
3. A real training: ``weakseg bench`` on ACDC real scribbles (seed-0 split, 60/20 patients) for
   ``--iterations`` iterations, WeakSeg only, evaluated on the first ``--test-volumes`` test volumes,
   next to the CPU run of the same split and iterations (``--cpu-reference``, per volume).

    bash benchmarks/gpu_check.sh            # = python benchmarks/gpu_check.py --out runs/gpu_check
    python benchmarks/gpu_check.py --device cpu --iterations 5 --steps 2 --test-volumes 2 --predict-size 96 --out runs/x

Writes ``gpu_check.json`` and prints it.  Needs ../shared/data (acdc, la).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CPU_REFERENCE = ROOT / "benchmarks" / "results" / "cpu_precision" / "bf16_600it" / "bench.json"

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


def bf16_peak(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def plans(device_type: str) -> dict:
    from WeakSegLib.config import TrainConfig
    from WeakSegLib.data.dataset import load_dataset
    from WeakSegLib.networks.planning import plan_training

    out = {}
    for name in ("acdc", "la"):
        dataset = load_dataset(DATA / name, with_annotations=False)
        out[name] = plan_training(dataset, TrainConfig(), device_type)
    return out


def predict_seconds(plan, device: str, size: int = 256, repeats: int = 3) -> float:
    import torch

    from WeakSegLib.inference.predictor import Predictor
    from WeakSegLib.networks.planning import build_network

    network = build_network(plan).to(device)
    image = torch.randn(plan.in_channels, size, size, size, device=device)
    predictor = Predictor(network, plan, device, bf16=True)
    predictor.probabilities(image)                       # warm-up (cuDNN autotuning, allocations)
    times = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        predictor.probabilities(image)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def acdc_training(device: str, iterations: int, test_volumes: int, out: Path) -> dict:
    from WeakSegLib.bench import BenchConfig, run_bench

    config = BenchConfig(dataset=str(DATA / "acdc"), annotation="real-scribbles", methods=["weakseg"],
                         iterations=iterations, device=device, seed=0, train_groups=60, test_groups=20,
                         largest_component=True, train_options={"weights": {"crf": 0.0}})
    report = run_bench(config, out / "acdc_bench", overwrite=True)
    per_case = report["methods"]["weakseg"]["per_case"]
    ids = sorted(per_case)[:test_volumes]
    result = {"iterations": report["methods"]["weakseg"]["train_iterations"],
              "train_seconds": report["methods"]["weakseg"]["train_seconds"],
              "volumes": ids, "dice": {i: per_case[i]["mean"]["dice"] for i in ids}}
    if CPU_REFERENCE.is_file():
        reference = json.loads(CPU_REFERENCE.read_text())["methods"]["weakseg"]["per_case"]
        result["cpu_dice"] = {i: reference[i]["mean"]["dice"] for i in ids if i in reference}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (to try the script without a GPU)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per plan (30)")
    p.add_argument("--iterations", type=int, default=600, help="ACDC training iterations (600, as the CPU run)")
    p.add_argument("--test-volumes", type=int, default=8, help="ACDC test volumes compared with the CPU run (8)")
    p.add_argument("--predict-size", type=int, default=256, help="edge of the predicted cube (256)")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_rate import step_rate

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; use --device cpu to try the script.",
              file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_type = torch.device(args.device).type
    name = torch.cuda.get_device_name() if device_type == "cuda" else "CPU"
    peak = bf16_peak(name) if device_type == "cuda" else None
    report = {"device": name, "torch": torch.__version__, "bf16_peak_tflops": peak, "throughput": {}}
    planned = plans(device_type)
    for dataset, plan in planned.items():
        rate = step_rate(plan, args.device, bf16=True, steps=args.steps)
        rate["tflop_per_s"] = round(rate["gflop_per_s"] / 1000, 2)
        rate["fraction_of_bf16_peak"] = round(rate["tflop_per_s"] / peak, 3) if peak else None
        report["throughput"][dataset] = rate
        print(json.dumps({dataset: rate}), flush=True)
    key = f"predict_{args.predict_size}_cubed_seconds"
    report[key] = round(predict_seconds(planned["la"], args.device, args.predict_size), 3)
    print(json.dumps({key: report[key]}), flush=True)
    report["acdc"] = acdc_training(args.device, args.iterations, args.test_volumes, out)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-step throughput on the CPU: fp32 vs bf16 autocast, 1 thread vs all, quiet vs one busy process.

Each setting runs in a fresh process (OpenMP reads its environment once), on the network that WeakSeg
plans for ACDC (2D DynUNet, patch 160 x 160, batch 8) or for the phantom when ACDC is absent.  A step
is forward + Dice/CE loss in float32 + backward + AdamW, as in training.  FLOPs per step are counted
with ``torch.utils.flop_counter``.  The "loaded" settings start one competing single-threaded busy
process first.  "auto" is WeakSeg's own thread choice (``WeakSegLib.utils.choose_num_threads``).

    python benchmarks/cpu_throughput.py --out benchmarks/results/cpu_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ACDC = ROOT.parent / "shared" / "data" / "acdc"


def _plan(acdc: Path):
    from WeakSegLib.config import TrainConfig
    from WeakSegLib.networks.planning import plan_training

    if acdc.is_dir():
        from WeakSegLib.data.dataset import load_dataset

        dataset = load_dataset(acdc, with_annotations=False)
    else:
        from WeakSegLib.data.phantom import make_phantom_dataset

        dataset = make_phantom_dataset(2)
    return plan_training(dataset, TrainConfig(device="cpu"), "cpu"), dataset.name


def measure(threads: str, precision: str, steps: int, acdc: Path) -> dict:
    """One setting, in this process: iterations/s of the training step and GFLOP/s."""
    import torch

    from WeakSegLib.utils import choose_num_threads

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_rate import step_rate

    n = choose_num_threads() if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    plan, name = _plan(acdc)
    result = step_rate(plan, "cpu", bf16=precision == "bf16", steps=steps)
    result.update({"dataset": name, "threads": n, "precision": precision})
    return result


def run_setting(threads: str, precision: str, loaded: bool, steps: int, acdc: Path, wait_policy: str | None) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    else:
        env.pop("OMP_WAIT_POLICY", None)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        if busy is not None:
            time.sleep(1.0)
        out = subprocess.run([sys.executable, __file__, "--child", threads, precision, str(steps), str(acdc)],
                             env=env, capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update({"setting": threads, "loaded": loaded, "omp_wait_policy": wait_policy or "default"})
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        threads, precision, steps, acdc = sys.argv[2:6]
        print(json.dumps(measure(threads, precision, int(steps), Path(acdc))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per setting (20)")
    p.add_argument("--acdc", default=str(DEFAULT_ACDC), help="ACDC folder whose plan is measured")
    p.add_argument("--out", required=True, help="folder for cpu_throughput.json and .md")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    settings = []
    for loaded in (False, True):
        for precision in ("fp32", "bf16"):
            for threads in sorted({"1", str(cores)}):
                settings.append((threads, precision, loaded, None))
        for policy in ("PASSIVE",):
            settings.append((str(cores), "bf16", loaded, policy))
        settings.append(("auto", "bf16", loaded, "PASSIVE"))
    rows = []
    for threads, precision, loaded, policy in settings:
        row = run_setting(threads, precision, loaded, args.steps, Path(args.acdc), policy)
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_throughput.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))
    lines = ["| threads | precision | OMP wait policy | competing busy process | iterations/s | GFLOP/s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        threads = f"auto: {r['threads']}" if r.get("setting") == "auto" else str(r["threads"])
        lines.append(f"| {threads} | {r['precision']} | {r['omp_wait_policy']} | {'yes' if r['loaded'] else 'no'}"
                     f" | {r['iterations_per_s']:.2f} | {r['gflop_per_s']:.0f} |")
    (out / "cpu_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

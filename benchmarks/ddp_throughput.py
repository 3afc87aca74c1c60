"""Training throughput of one process vs data-parallel processes (torchrun, gloo) on this machine's CPU.

python benchmarks/ddp_throughput.py --out runs/ddp_throughput --settings 1x2 2x1 --iterations 30 --repeats 2

Each setting ``PxT`` runs ``weakseg train`` on the same phantom dataset (the demo's: scribbles + size
ranges, 2D plan) with P processes of T threads (``OMP_NUM_THREADS=T``; P > 1 through ``torchrun
--nproc-per-node P``), the same *total* batch and the planned network.  Throughput is measured from
the run's own history (one entry per iteration), after ``--warmup`` iterations, so start-up and data
preparation are left out:

* iterations/s  — optimisation steps per second (every step uses the whole total batch);
* patches/s     — iterations/s x total patch batch;
* volumes/s     — whole-volume batches per second (global terms: each rank takes one of its own volumes
                  per step in a 2D plan, every other step in a 3D plan).

Settings are run interleaved (1x2, 2x1, 1x2, 2x1, ...) and the median over ``--repeats`` reported, next
to the load average, because a shared machine's load moves the figures.  Writes ``results.json`` and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from WeakSegLib.data.dataset import write_manifest
from WeakSegLib.data.phantom import make_phantom_dataset
from WeakSegLib.data.simulate import combine, simulate_scribbles, simulate_size_ranges
from WeakSegLib.data.volume import write_volume


def write_dataset(folder: Path, n_cases: int, shape: list[int], spacing: list[float]) -> Path:
    """The demo's training data (phantoms with scribbles on 35% of the slices + size ranges), written to disk."""
    folder.mkdir(parents=True, exist_ok=True)
    phantoms = make_phantom_dataset(n_cases, seed=0, shape=shape, spacing=spacing)
    entries = []
    for i, case in enumerate(phantoms.cases):
        k = phantoms.num_classes
        annotation = combine(simulate_scribbles(case.ground_truth, k, seed=i, slice_fraction=0.35),
                             simulate_size_ranges(case.ground_truth, k, margin=0.15))
        write_volume(case.image, folder / f"{case.id}.nii.gz")
        annotation.save(folder / f"{case.id}_weak.nii.gz", folder / f"{case.id}_weak.json")
        entries.append({"id": case.id, "image": f"{case.id}.nii.gz", "annotation": f"{case.id}_weak.nii.gz",
                        "sidecar": f"{case.id}_weak.json"})
    return write_manifest({**phantoms.manifest(), "unannotated_value": -1, "cases": entries}, folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_setting(procs: int, threads: int, data: Path, config: Path, out: Path, warmup: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    train = ["-m", "WeakSegLib", "train", "--dataset", str(data), "--out", str(out), "--config", str(config),
             "--device", "cpu", "--progress", "none", "--overwrite"]
    if procs == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *train]
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.monotonic() - start
    history = [e for e in json.loads((out / "history.json").read_text()) if "loss" in e]
    timed = [e for e in history if e["iteration"] >= warmup]
    first, last = timed[0], timed[-1]
    its = (last["iteration"] - first["iteration"]) / (last["seconds"] - first["seconds"])
    meta = json.loads((out / "model.json").read_text())
    plan = meta["plan"]
    volume_steps = 1.0 if plan["dims"] == 2 else 0.5     # the trainer's volume-batch schedule
    uses_volumes = bool({"size", "tags", "box_emptiness", "centroid"} & set(meta["summary"]["objective_terms"]))
    return {"setting": f"{procs}x{threads}", "processes": procs, "threads_per_process": threads,
            "iterations_per_s": its, "patches_per_s": its * plan["batch_size"],
            "volumes_per_s": its * procs * volume_steps if uses_volumes else 0.0,
            "seconds_per_iteration": 1.0 / its, "wall_s": wall, "load_before": load_before,
            "load_after": os.getloadavg()[0], "plan": plan}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ddp_throughput")
    p.add_argument("--settings", nargs="+", default=None,
                   help="PxT: P processes of T threads each (default: 1x<cores> and 2x<cores/2>)")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="iterations left out of the timing")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[24, 96, 96], help="phantom shape z y x (the demo's)")
    p.add_argument("--spacing", type=float, nargs=3, default=[1.2, 1.2, 4.0], help="x y z mm (the demo's)")
    p.add_argument("--config", default=None, help="JSON dict of extra TrainConfig options")
    args = p.parse_args()

    cores = os.cpu_count() or 1
    settings = args.settings or [f"1x{cores}", f"2x{max(cores // 2, 1)}"]
    out = Path(args.out)
    data = write_dataset(out / "data", args.cases, args.shape, args.spacing).parent
    config = {"iterations": args.iterations, "minutes": None, "device": "cpu", "log_every": 1,
              "checkpoint_every": 10 * args.iterations, "propagate_scribbles": False,
              **(json.loads(args.config) if args.config else {})}
    (out / "config.json").write_text(json.dumps(config))
    results: dict[str, list[dict]] = {s: [] for s in settings}
    for r in range(args.repeats):
        for s in settings:
            procs, threads = (int(x) for x in s.lower().split("x"))
            res = run_setting(procs, threads, data, out / "config.json", out / f"model_{s}_{r}", args.warmup)
            results[s].append(res)
            print(f"{s} run {r}: {res['iterations_per_s']:.3f} it/s (load {res['load_before']:.1f})",
                  file=sys.stderr, flush=True)
    summary = []
    for s, runs in results.items():
        med = {k: statistics.median(run[k] for run in runs)
               for k in ("iterations_per_s", "patches_per_s", "volumes_per_s", "seconds_per_iteration",
                         "load_before", "load_after")}
        summary.append({"setting": s, **med, "runs": runs})
    base = summary[0]["iterations_per_s"]
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cores": cores,
              "torch_threads_note": "OMP_NUM_THREADS per process", "config": config, "settings": summary}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    plan = summary[0]["runs"][0]["plan"]
    print(f"\nPlan: {plan['dims']}D, patch {plan['patch_size']}, total batch {plan['batch_size']}, "
          f"filters {plan['filters']}; {cores} CPU cores; {args.iterations} iterations ({args.warmup} warm-up), "
          f"median of {args.repeats}.\n")
    print("| processes x threads | iterations/s | patches/s | volumes/s | speed-up | load avg |")
    print("|---|---|---|---|---|---|")
    for row in summary:
        print(f"| {row['setting']} | {row['iterations_per_s']:.3f} | {row['patches_per_s']:.2f} | "
              f"{row['volumes_per_s']:.2f} | {row['iterations_per_s'] / base:.2f}x | "
              f"{row['load_before']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

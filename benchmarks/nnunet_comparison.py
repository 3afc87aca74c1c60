"""nnU-Net v2 with its ignore label on ACDC's real scribbles, same split and CPU budget as WeakSeg.

What a user who picks nnU-Net instead would run: the dataset's scribbles as labels with the
unannotated voxels as nnU-Net's ``ignore`` label, ``nnUNetv2_plan_and_preprocess`` (2D configuration),
``nnUNetv2_train ... -device cpu`` and ``nnUNetv2_predict`` with its default test-time mirroring. The
budget runs from the start of planning (planning and preprocessing are part of what the user waits
for); the only change to nnU-Net is a trainer that stops at the end of the budget and keeps a copy of
the weights at fixed fractions of it (``nnUNetTrainer_WallClock``, written into the installed package,
since nnU-Net finds trainers by name there). Everything else is nnU-Net's default.

nnU-Net lives in its own virtual environment (it pins other versions of torch and numpy)::

    python3.11 -m venv ../nnunet-venv && ../nnunet-venv/bin/pip install nnunetv2   # brings its own torch
    ../nnunet-venv/bin/python benchmarks/nnunet_comparison.py prepare --work ../nnunet
    ../nnunet-venv/bin/python benchmarks/nnunet_comparison.py train --work ../nnunet --minutes 20
    ../nnunet-venv/bin/python benchmarks/nnunet_comparison.py predict --work ../nnunet
    .venv/bin/python benchmarks/nnunet_comparison.py evaluate --work ../nnunet \\
        --out benchmarks/results/acdc_nnunet_scribbles

``prepare`` takes the split (60 / 20 patients) of the WeakSeg run it is compared with
(``--bench``, default ``benchmarks/results/acdc_real_scribbles_seed0/bench.json``); ``evaluate``
scores the test volumes as ``weakseg bench`` does (Dice, HD95 per class; largest component per class
when that run used it) and plots both Dice-vs-time curves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATASET_ID = 801
DATASET_NAME = f"Dataset{DATASET_ID}_ACDCScribbles"
TRAINER = "nnUNetTrainer_WallClock"
DEFAULT_BENCH = "benchmarks/results/acdc_real_scribbles_seed0/bench.json"
SNAPSHOT_FRACTIONS = (0.25, 0.5, 0.75)

TRAINER_SOURCE = '''"""nnU-Net's default trainer, stopped at a wall-clock deadline, with weight copies on the way.

Written by WeakSeg's benchmarks/nnunet_comparison.py. Environment: NNUNET_DEADLINE (epoch seconds at
which training ends), NNUNET_SNAPSHOTS (comma-separated epoch seconds at which a copy of the weights
is saved as checkpoint_at_<seconds since start>s.pth), NNUNET_START (epoch seconds of the budget's start).
"""
import os
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_WallClock(nnUNetTrainer):
    def run_training(self):
        deadline = float(os.environ["NNUNET_DEADLINE"])
        start = float(os.environ["NNUNET_START"])
        pending = sorted(float(s) for s in os.environ.get("NNUNET_SNAPSHOTS", "").split(",") if s)
        iterations = 0
        self.on_train_start()
        done = False
        for epoch in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for batch_id in range(self.num_iterations_per_epoch):
                now = time.time()
                while pending and now >= pending[0]:
                    pending.pop(0)
                    self.save_checkpoint(join(self.output_folder, f"checkpoint_at_{now - start:.0f}s.pth"))
                    self.print_to_log_file(f"snapshot at {now - start:.0f} s after {iterations} iterations")
                if now >= deadline:
                    done = True
                    break
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                iterations += 1
            if train_outputs:
                self.on_train_epoch_end(train_outputs)
            if done:
                self.current_epoch += 1   # on_train_end stores current_epoch - 1
                break
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = []
                for batch_id in range(self.num_val_iterations_per_epoch):
                    val_outputs.append(self.validation_step(next(self.dataloader_val)))
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.print_to_log_file(f"wall-clock budget reached after {iterations} iterations "
                               f"({time.time() - start:.0f} s since the start of planning)")
        with open(join(self.output_folder, "iterations.txt"), "w") as f:
            f.write(str(iterations))
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        # With fold "all" the validation cases are the training cases: predicting them takes about an hour
        # on a 2-core CPU and says nothing about the test split, so it is skipped.
        self.print_to_log_file("final validation on the training cases skipped")
'''


def _env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"))
    return env


def _split(bench: str) -> tuple[list[str], list[str]]:
    with open(bench) as f:
        split = json.load(f)["split"]
    return list(split["train_groups"]), list(split["test_groups"])


def prepare(args) -> None:
    import nnunetv2
    import SimpleITK as sitk

    work = Path(args.work)
    raw = work / "raw" / DATASET_NAME
    if raw.exists():
        raise SystemExit(f"{raw} exists: remove {work} or choose another --work folder.")
    train, test = _split(args.bench)
    data = Path(args.data)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True)
    n_train = 0
    for image in sorted(data.glob("patient*_frame??.nii.gz")):
        case = image.name[: -len(".nii.gz")]
        patient = case.split("_")[0]
        if patient in train:
            shutil.copy(image, raw / "imagesTr" / f"{case}_0000.nii.gz")
            scribble = sitk.ReadImage(str(data / f"{case}_scribble.nii.gz"))   # 0-3 classes, 4 unannotated
            sitk.WriteImage(sitk.Cast(scribble, sitk.sitkUInt8), str(raw / "labelsTr" / f"{case}.nii.gz"))
            n_train += 1
        elif patient in test:
            shutil.copy(image, raw / "imagesTs" / f"{case}_0000.nii.gz")
            shutil.copy(data / f"{case}_gt.nii.gz", raw / "labelsTs" / f"{case}.nii.gz")
    dataset = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3, "ignore": 4},
               "numTraining": n_train, "file_ending": ".nii.gz",
               "name": "ACDC real scribbles (Valvano et al.), unannotated voxels as the ignore label"}
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    trainer_dir = Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer" / "variants" / "weakseg_benchmark"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    (trainer_dir / "__init__.py").touch()
    (trainer_dir / f"{TRAINER}.py").write_text(TRAINER_SOURCE)
    print(f"{n_train} training volumes, {len(list((raw / 'imagesTs').iterdir()))} test volumes in {raw}; "
          f"trainer {TRAINER} in {trainer_dir}")


def _run(cmd: list[str], env: dict, log: Path) -> float:
    start = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.time() - start


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def train(args) -> None:
    work = Path(args.work)
    env = _env(work)
    log = work / "train.log"
    budget = args.minutes * 60.0
    start = time.time()
    plan_s = _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
                   "--verify_dataset_integrity"], env, log)
    env.update(NNUNET_START=f"{start:.3f}", NNUNET_DEADLINE=f"{start + budget:.3f}",
               NNUNET_SNAPSHOTS=",".join(f"{start + f * budget:.3f}" for f in SNAPSHOT_FRACTIONS))
    train_s = _run([_bin("nnUNetv2_train"), str(DATASET_ID), "2d", "all", "-tr", TRAINER, "-device", "cpu"], env, log)
    record = {"minutes": args.minutes, "plan_and_preprocess_seconds": round(plan_s, 1),
              "train_process_seconds": round(train_s, 1), "total_seconds": round(time.time() - start, 1),
              "threads": os.cpu_count(), "nnunet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "default")}
    (work / "train.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


def _model_folder(work: Path) -> Path:
    return work / "results" / DATASET_NAME / f"{TRAINER}__nnUNetPlans__2d"


def predict(args) -> None:
    work = Path(args.work)
    env = _env(work)
    fold = _model_folder(work) / "fold_all"
    checkpoints = sorted(p.name for p in fold.glob("checkpoint_at_*s.pth")) + ["checkpoint_final.pth"]
    if args.checkpoints:
        checkpoints = [c for c in checkpoints if c[: -len(".pth")] in args.checkpoints.split(",")]
    timings = {}
    for checkpoint in checkpoints:
        out = work / "predictions" / checkpoint[: -len(".pth")]
        if out.exists():
            continue
        cmd = [_bin("nnUNetv2_predict"), "-i", str(work / "raw" / DATASET_NAME / "imagesTs"), "-o", str(out),
               "-d", str(DATASET_ID), "-c", "2d", "-f", "all", "-tr", TRAINER, "-chk", checkpoint, "-device", "cpu",
               "-npp", "1", "-nps", "1"]
        if args.no_tta or (checkpoint != "checkpoint_final.pth" and not args.tta_for_curve):
            cmd.append("--disable_tta")
        timings[checkpoint] = round(_run(cmd, env, work / "predict.log"), 1)
    path = work / "predict.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **timings}, indent=2))
    print(json.dumps(timings))


def evaluate(args) -> None:
    import numpy as np

    from WeakSegLib.data.volume import Volume, read_volume
    from WeakSegLib.evaluation.metrics import evaluate as evaluate_volume
    from WeakSegLib.evaluation.metrics import summarise
    from WeakSegLib.evaluation.reports import to_jsonable
    from WeakSegLib.inference.postprocessing import keep_largest_component

    work = Path(args.work)
    with open(args.bench) as f:
        bench = json.load(f)
    largest = bool(bench["config"].get("largest_component"))
    class_names = ["background", "RV", "Myo", "LV"]
    raw = work / "raw" / DATASET_NAME
    fold = _model_folder(work) / "fold_all"
    snapshots = {}
    for line in "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt"))).splitlines():
        if "snapshot at" in line:
            seconds, iterations = line.split("snapshot at ")[1].split(" s after ")
            snapshots[f"checkpoint_at_{seconds}s"] = (float(seconds), int(iterations.split()[0]))
    final_iterations = int((fold / "iterations.txt").read_text())
    trained = json.loads((work / "train.json").read_text())
    predicted = json.loads((work / "predict.json").read_text())
    snapshots["checkpoint_final"] = (trained["minutes"] * 60.0, final_iterations)
    curve, per_case_final, summary_final = [], {}, None
    for name, (seconds, iterations) in sorted(snapshots.items(), key=lambda kv: kv[1][0]):
        folder = work / "predictions" / name
        if not folder.is_dir():
            continue
        reports = []
        per_case = {}
        for truth_path in sorted((raw / "labelsTs").glob("*.nii.gz")):
            truth = read_volume(truth_path)
            pred = read_volume(folder / truth_path.name)
            labels = pred.array.astype(np.int16)
            if largest:
                labels = keep_largest_component(labels)
            report = evaluate_volume(Volume(labels, truth.geometry), truth, class_names)
            reports.append(report)
            per_case[truth_path.name[: -len(".nii.gz")]] = report
        summary = summarise(reports)
        curve.append({"checkpoint": name, "seconds": seconds, "iteration": iterations,
                      "mean_dice": summary["mean"]["dice"]["mean"],
                      "dice_per_class": {c: summary["classes"][c]["dice"]["mean"] for c in class_names[1:]}})
        if name == "checkpoint_final":
            per_case_final, summary_final = per_case, summary
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=args.overwrite)
    weakseg = bench["methods"]["weakseg"]
    record = {"dataset": bench["dataset_path"], "split_from": args.bench, "largest_component": largest,
              "nnunet": {"train": trained, "predict_seconds": predicted, "curve": curve, "summary": summary_final,
                         "per_case": per_case_final},
              "weakseg": {"curve": weakseg["curve"], "mean_dice": weakseg["mean_dice"],
                          "train_iterations": weakseg["train_iterations"],
                          "predict_seconds_per_volume": weakseg["predict_seconds_per_volume"]}}
    (out / "comparison.json").write_text(json.dumps(to_jsonable(record), indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ws = [(0.0, 0.0)] + [(p["seconds"] / 60, p["mean_dice"]) for p in weakseg["curve"]]
    nn = [(trained["plan_and_preprocess_seconds"] / 60, 0.0)] + [(p["seconds"] / 60, p["mean_dice"]) for p in curve]
    ax.plot(*zip(*ws), "o-", label=f"WeakSeg ({weakseg_precision(bench)}, 2 threads)")
    ax.plot(*zip(*nn), "s-", label="nnU-Net v2, ignore label (fp32, CPU)")
    ax.set_xlabel("minutes since the start (nnU-Net: planning and preprocessing included)")
    ax.set_ylabel("mean Dice, 40 test volumes")
    ax.set_title("ACDC real scribbles, 60 training patients, 2-core CPU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "dice_vs_time.png", dpi=100)
    for p in curve:
        print(f"nnU-Net {p['checkpoint']}: {p['seconds'] / 60:.1f} min, {p['iteration']} it, mean Dice "
              f"{p['mean_dice']:.3f} {json.dumps({k: round(v, 3) for k, v in p['dice_per_class'].items()})}")
    print(f"WeakSeg at {weakseg['curve'][-1]['seconds'] / 60:.1f} min: {weakseg['mean_dice']:.3f}")


def weakseg_precision(bench: dict) -> str:
    """bf16 or float32: what the compared WeakSeg run trained in (float32 unless its options asked for bf16)."""
    return "bf16" if bench["config"].get("train_options", {}).get("bf16") else "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "train", "predict", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--work", required=True, help="nnU-Net's raw / preprocessed / results folders go here")
        p.add_argument("--bench", default=DEFAULT_BENCH, help="bench.json of the WeakSeg run compared with")
        if name == "prepare":
            p.add_argument("--data", default="../shared/data/acdc")
        if name == "train":
            p.add_argument("--minutes", type=float, default=20.0)
        if name == "predict":
            p.add_argument("--tta-for-curve", action="store_true",
                           help="mirroring at test time for the intermediate snapshots too (4x slower)")
            p.add_argument("--no-tta", action="store_true", help="no mirroring at test time, final model included")
            p.add_argument("--checkpoints", default="",
                           help="comma-separated checkpoint names to predict (default: every snapshot and the "
                                "final model)")
        if name == "evaluate":
            p.add_argument("--out", required=True)
            p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    {"prepare": prepare, "train": train, "predict": predict, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    main()

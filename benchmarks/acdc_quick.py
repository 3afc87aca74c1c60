"""Quick ACDC sanity run: train on N patients' real scribbles for M minutes, Dice on held-out patients.

python benchmarks/acdc_quick.py --train 60 --test 20 --minutes 20 --objective auto --out runs/acdc_auto
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

import WeakSegLib as ws
from WeakSegLib.evaluation.metrics import evaluate, summarise
from WeakSegLib.evaluation.reports import to_jsonable
from WeakSegLib.training import TrainConfig, train
from WeakSegLib.utils import peak_rss_mb

p = argparse.ArgumentParser()
p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc"))
p.add_argument("--train", type=int, default=60)
p.add_argument("--test", type=int, default=20)
p.add_argument("--minutes", type=float, default=20)
p.add_argument("--objective", default="auto")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--tta", action="store_true")
p.add_argument("--config", default=None, help="JSON dict of extra TrainConfig options")
p.add_argument("--out", required=True)
args = p.parse_args()

data = ws.load_dataset(args.data)
groups = data.groups()
rng = np.random.default_rng(args.seed)
order = list(rng.permutation(groups))
train_groups, test_groups = order[: args.train], order[args.train: args.train + args.test]
train_set, rest = data.split_by_group(train_groups)
test_set, _ = rest.split_by_group(test_groups)
extra = json.loads(args.config) if args.config else {}
config = TrainConfig(minutes=args.minutes, seed=args.seed, objective=args.objective, **extra)
t0 = time.monotonic()
result = train(train_set, config, Path(args.out) / "model")
t_train = time.monotonic() - t0
reports = []
for case in test_set.cases:
    pred = result.model.predict(case.image, tta=args.tta)
    reports.append(evaluate(pred.labels, case.ground_truth, data.class_names))
summary = summarise(reports)
out = {"objective": args.objective, "train_patients": len(train_groups), "test_patients": len(test_groups),
       "test_volumes": len(test_set), "iterations": result.iterations, "seconds_train": round(t_train, 1),
       "peak_rss_mb": round(peak_rss_mb(), 1), "summary": summary,
       "per_class_dice": {k: v["dice"]["mean"] for k, v in summary["classes"].items()},
       "mean_dice": summary["mean"]["dice"]["mean"], "config": config.to_dict(),
       "test_groups": list(test_groups)}
Path(args.out).mkdir(parents=True, exist_ok=True)
(Path(args.out) / "result.json").write_text(json.dumps(to_jsonable(out), indent=2))
print(json.dumps(to_jsonable({k: out[k] for k in ("objective", "iterations", "seconds_train", "per_class_dice",
                                                    "mean_dice", "peak_rss_mb")})))

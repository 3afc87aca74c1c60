"""The benchmark's outputs: ``bench.json`` (everything, NaN as null), ``bench.md`` (a table), ``dice_vs_time.png``."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from WeakSegLib.bench.comparisons import paired_comparisons
from WeakSegLib.bench.config import METHOD_LABELS, TEST_SEED_METHODS, TRAINED_METHODS, UNTRAINED_METHODS
from WeakSegLib.evaluation.reports import to_jsonable
from WeakSegLib.evaluation.statistics import describe_paired_difference
from WeakSegLib.utils import atomic_write_json, atomic_write_text

# Colour and marker of each method in the Dice-vs-time plot.
METHOD_STYLE = {"weakseg": ("tab:red", "o"), "weakseg-offsets": ("darkred", "d"), "pce": ("tab:blue", "s"),
                "naive": ("tab:brown", "v"),
                "full": ("tab:green", "^"),
                "growcut": ("tab:gray", "D"), "interactive-seeds": ("tab:purple", "*"),
                "interactive-finetune": ("tab:orange", "P"), "interactive-geodesic": ("tab:olive", "X")}


def write_outputs(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``dice_vs_time.png`` into ``out``; returns their paths."""
    out = Path(out)
    paths = {"json": atomic_write_json(out / "bench.json", to_jsonable(report)),
             "markdown": atomic_write_text(out / "bench.md", format_markdown(report))}
    paths["plot"] = plot_report(report, out / "dice_vs_time.png")
    return paths


def plot_report(report: dict, path: str | os.PathLike) -> Path:
    """The Dice-vs-time plot of a report: curves of the trained methods, markers of the interactive ones,
    a line for Grow-from-seeds (:func:`~WeakSegLib.evaluation.plots.plot_dice_vs_time`)."""
    from WeakSegLib.evaluation.plots import plot_dice_vs_time

    return plot_dice_vs_time(report, path, METHOD_STYLE, trained=TRAINED_METHODS,
                             seeded=("weakseg-offsets", "interactive-seeds", "interactive-finetune"),
                             untrained=UNTRAINED_METHODS)


def _fmt_stat(stat: dict, digits: int = 3) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "n/a"
    text = f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
    return text + (f" ({stat['skipped']} n/a)" if stat.get("skipped") else "")


def _fmt_seconds(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def format_markdown(report: dict) -> str:
    """The benchmark as a markdown table plus the headline comparisons."""
    classes = report["classes"][1:]
    methods = report["methods"]
    cfg = report["config"]
    budget = (f"{cfg['iterations']} iterations" if cfg.get("iterations")
              else f"{cfg['minutes']:g} min" if cfg.get("minutes") else "none") + " per trained method"
    per_slice = " (per slice)" if cfg.get("per_slice") else ""
    if report["annotation"] == "points":
        per_slice += (f", {cfg.get('points_per_object', 1)} click(s) per object, radius "
                      f"{cfg.get('point_radius_mm', 0.0):g} mm, background clicks "
                      f"{'per slice' if cfg.get('background_per_slice') else 'one per volume'}")
    if cfg.get("size_margin") is not None:
        per_slice += f", + size ranges (true volume +/- {100 * cfg['size_margin']:g} %)"
    lines = [f"# WeakSeg benchmark: {report['dataset']}, annotation `{report['annotation']}`{per_slice}", "",
             f"- Split by patient (seed {cfg['seed']}): {len(report['split']['train_groups'])} training "
             f"patients ({report['n_train']} volumes), {len(report['split']['test_groups'])} test patients "
             f"({report['n_test']} volumes).",
             f"- Budget: {budget}; device: {report['environment']['device']}; "
             f"total {report['seconds_total'] / 60:.1f} min.",
             f"- Annotated voxels in the training annotations: {100 * report['annotated_fraction']:.3f} %."]
    if report.get("test_seed_fraction") is not None:
        lines.append(f"- Test-volume seeds for Grow-from-seeds and the interactive modes: "
                     f"{report['test_seeds']} ({100 * report['test_seed_fraction']:.3f} % of the test voxels).")
    lines += ["- Dice and HD95: mean ± sd over the test volumes (HD95 'n/a' counts volumes where a class was "
              "missed or predicted while absent).", ""]
    header = (["method"] + [f"{c} Dice" for c in classes]
              + ["mean Dice", "HD95 mm", "train time", "predict / volume", "peak RSS MB (+Δ)", "annotated"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for name, res in methods.items():
        label = res["label"]
        if "summary" not in res:
            lines.append("| " + " | ".join([label, f"{res['status']}: {res.get('reason', '')}"]
                                           + [""] * (len(header) - 2)) + " |")
            continue
        summary = res["summary"]
        rss = "n/a" if res.get("peak_rss_mb") is None else \
            f"{res['peak_rss_mb']:.0f} (+{res.get('rss_increase_mb') or 0:.0f})"
        if res.get("peak_gpu_mb") is not None:
            rss += f", GPU {res['peak_gpu_mb']:.0f}"
        if res.get("status") == "loaded" or (name in ("weakseg-offsets", "interactive-seeds", "interactive-finetune")
                                             and res.get("train_seconds") is None):
            train_time = "trained before (--model)"
        elif name in ("weakseg-offsets", "interactive-seeds", "interactive-finetune"):
            train_time = f"{_fmt_seconds(res.get('train_seconds'))} (WeakSeg's)"
        elif name in UNTRAINED_METHODS:
            train_time = "none"
        else:
            train_time = f"{_fmt_seconds(res.get('train_seconds'))} ({res.get('train_iterations')} it"
            if res.get("prepare_seconds") is not None:
                train_time += f", prep {_fmt_seconds(res['prepare_seconds'])}"
            train_time += ")"
        trained_on = "n/a" if res.get("annotated_fraction") is None else f"{100 * res['annotated_fraction']:.2f} %"
        if name in TEST_SEED_METHODS:
            annotated = f"{100 * (res.get('test_seed_fraction') or 0):.2f} % (test)"
            if name not in UNTRAINED_METHODS:
                annotated = f"{trained_on} + " + annotated
        else:
            annotated = trained_on
        row = ([label] + [_fmt_stat(summary["classes"][c]["dice"]) for c in classes]
               + [_fmt_stat(summary["mean"]["dice"]), _fmt_stat(summary["mean"]["hd95_mm"], 1), train_time,
                  _fmt_seconds(res.get("predict_seconds_per_volume")), rss, annotated])
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    dice = {n: r.get("mean_dice") for n, r in methods.items() if r.get("mean_dice") is not None}
    if "weakseg" in dice and "full" in dice and dice["full"] > 0:
        lines.append(f"- WeakSeg reaches **{100 * dice['weakseg'] / dice['full']:.1f} %** of the fully "
                     f"supervised upper bound's mean Dice ({dice['weakseg']:.3f} vs {dice['full']:.3f}), with "
                     f"{100 * report['annotated_fraction']:.2f} % of the voxels annotated.")
    comparisons = report.get("comparisons") or paired_comparisons(methods, report.get("split", {}).get(
        "test_case_groups"))

    def versus(name: str) -> str:
        paired = comparisons.get(f"weakseg-vs-{name}")
        if paired is None:
            return f": {dice['weakseg'] - dice[name]:+.3f} mean Dice"
        return f", mean Dice paired over the test volumes: {describe_paired_difference(paired)}"

    if "weakseg" in dice and "weakseg-offsets" in dice:
        paired = comparisons.get("weakseg-offsets-vs-weakseg")
        res = methods["weakseg-offsets"]
        offsets = ", ".join(f"{c} {v:+g}" for c, v in zip(report["classes"], res["class_offsets"]))
        change = (f": {dice['weakseg-offsets'] - dice['weakseg']:+.3f} mean Dice" if paired is None
                  else f", paired: {describe_paired_difference(paired)}")
        lines.append(f"- Class offsets ({offsets}; chosen on {res.get('class_offsets_source')}) vs the same model "
                     f"without them{change}.")
    if "weakseg" in dice and "pce" in dice:
        lines.append(f"- WeakSeg vs plain pCE{versus('pce')}.")
    if "weakseg" in dice and "naive" in dice:
        lines.append(f"- WeakSeg vs naive training (missing classes as background){versus('naive')}.")
    if "growcut" in dice:
        for name in ("weakseg", "interactive-seeds", "interactive-finetune", "interactive-geodesic"):
            if name in dice:
                what = ("without the test volumes' scribbles" if name == "weakseg"
                        else "with the same test scribbles")
                lines.append(f"- {METHOD_LABELS[name]} vs Slicer Grow-from-seeds ({what}): "
                             f"{dice[name] - dice['growcut']:+.3f} mean Dice.")
    sweep = methods.get("interactive-seeds", {}).get("prior_weight_sweep")
    if sweep:
        values = ", ".join(f"{p['prior_weight']:g}: {p['mean_dice']:.3f}" for p in sweep)
        lines.append(f"- Seeded random walker, other prior weights (reported, not used for the headline "
                     f"{methods['interactive-seeds']['prior_weight']:g}): {values}.")
    lines += ["", "Peak RSS: sampled during each method; (+Δ) is its increase over the RSS when the method "
              "started (process-wide peak in bench.json). Train time is the trainer's clock, data "
              "preparation (prep: normalisation, resampling, scribble propagation) included, as the budget "
              "counts it.", ""]
    return "\n".join(lines + format_volume_errors(report) + format_per_volume(report))


def median_volume_errors(result: dict) -> dict[str, float | None]:
    """A method's median relative volume error per class over the test volumes, ``(pred - true) / true``
    (volumes where the class is absent from the mask are left out; None when none is left)."""
    errors: dict[str, list[float]] = {}
    for case in (result.get("per_case") or {}).values():
        for name, m in case["classes"].items():
            true, pred = m.get("volume_gt_ml"), m.get("volume_pred_ml")
            if true and pred is not None:
                errors.setdefault(name, []).append((pred - true) / true)
    return {name: statistics.median(v) for name, v in errors.items()}


def format_volume_errors(report: dict) -> list[str]:
    """Markdown lines: each method's median relative volume error per class (too large > 0)."""
    done = {name: median_volume_errors(res) for name, res in report["methods"].items() if res.get("per_case")}
    if not done:
        return []
    classes = report["classes"][1:]
    lines = ["## Median volume error per class", "", "(predicted - true) / true over the test volumes; > 0 too large.",
             "", "| method | " + " | ".join(classes) + " |", "|" + "|".join(["---"] * (len(classes) + 1)) + "|"]
    for name, errors in done.items():
        cells = ["n/a" if errors.get(c) is None else f"{100 * errors[c]:+.1f} %" for c in classes]
        lines.append(f"| {report['methods'][name]['label']} | " + " | ".join(cells) + " |")
    return lines + [""]


def format_per_volume(report: dict) -> list[str]:
    """Markdown lines: each test volume's mean foreground Dice per completed method (none with one method)."""
    done = {name: res["per_case"] for name, res in report["methods"].items() if res.get("per_case")}
    if len(done) < 2:
        return []
    cases = sorted({case for per_case in done.values() for case in per_case})
    lines = ["## Mean Dice per test volume", "",
             "| volume | " + " | ".join(report["methods"][name]["label"] for name in done) + " |",
             "|" + "|".join(["---"] * (len(done) + 1)) + "|"]
    for case in cases:
        cells = []
        for per_case in done.values():
            value = per_case.get(case, {}).get("mean", {}).get("dice")
            cells.append("n/a" if value is None else f"{value:.3f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines + [""]

"""The paper's Table 1 layout from finished multi-label runs: one row per regularizer, one column per task.

    python -m experiments.table1 results/ferplus_k1
    python -m experiments.table1 results/bp4d_fold1 results/bp4d_fold2 results/bp4d_fold3
    python -m experiments.table1 results/ferplus_head_bits_k1 results/ferplus_k1 \
        --methods=early_stopping,quantization+early_stopping --seeds=0,1
    python -m experiments.table1 results/ferplus_k1 results/ferplus_k3 --side_by_side \
        --out=results/ferplus_annotators

Reads every ``<dir>/<run>/final.json`` with ``per_task_f1`` and writes, into the first
directory (or ``--out``), atomically:

* ``table1.md`` — per-task test F1 and average F1, in percent, mean ± std over seeds
  (sample std, n − 1), with the number of seeds, the average's gain over the Baseline
  row (paired by seed) and the spread across tasks; then the paper's BP4D Table 1 for comparison;
* ``table1.png`` — a heat map of the per-task F1 (colour: difference to the Baseline
  row) beside the average F1 of each row with its std over seeds (and, for BP4D, the
  paper's average as a marker).

Rows are labelled by regularizer. When every run of the table stops early (the
paper's BP4D protocol: ``X+early_stopping`` for every X), early stopping is left
out of the labels and ``early_stopping`` alone is the Baseline. Settings that differ
from a method's defaults are named after the label (e.g. per-task head bits).

With several directories (the folds of a cross-validation), a seed's score is the
mean over the directories that hold that seed's run; mean ± std are then over seeds.

The third form takes the head bit-width variants from one folder and the reference rows
(early stopping, quantization with default heads) from the Table 1 folder, on the same seeds.
The fourth sets data settings side by side (``table1_side_by_side.md``/``.png``): each
setting's average F1 and gain over its own Baseline; averaging settings as folds is refused.
The paper's BP4D values are printed for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from tfq_noise import results, stats

from .style import method_color

METHOD_LABELS = {
    "baseline": "Baseline",
    "early_stopping": "Early Stopping",
    "weight_decay": "Weight Decay",
    "dropout": "Dropout",
    "label_smoothing": "Label Smoothing",
    "pruning": "Pruning",
    "quantization": "Quantization",
}
ROW_ORDER = ("Baseline", "Early Stopping", "Weight Decay", "Dropout", "Label Smoothing", "Pruning", "Quantization")

# The paper's Table 1 (BP4D, F1 in percent, AUs 1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24, then the average).
PAPER_AUS = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24")
PAPER_BP4D: dict[str, tuple[tuple[float, ...], float]] = {
    "Baseline": ((49.6, 45.8, 55.1, 74.8, 75.5, 83.7, 87.1, 62.7, 47.0, 56.4, 44.8, 41.2), 60.3),
    "Weight Decay": ((52.6, 46.8, 54.3, 75.3, 76.4, 83.1, 87.2, 58.6, 44.6, 58.5, 44.1, 43.1), 60.4),
    "Dropout": ((50.2, 46.1, 57.5, 75.3, 75.8, 83.1, 87.1, 60.5, 47.9, 58.4, 46.9, 47.9), 61.4),
    "Label Smoothing": ((48.8, 45.7, 56.0, 75.3, 74.8, 82.7, 87.3, 60.1, 44.0, 57.1, 43.8, 41.5), 59.8),
    "Pruning": ((51.0, 45.0, 56.2, 76.1, 76.4, 82.5, 86.8, 61.3, 47.1, 58.0, 44.2, 42.8), 60.6),
    "Quantization": ((51.7, 48.2, 57.6, 75.4, 76.9, 83.9, 87.8, 59.7, 48.4, 59.0, 47.8, 53.4), 62.5),
}

# Known task orders (final.json stores per_task_f1 with sorted keys).
TASK_ORDERS: tuple[tuple[str, ...], ...] = (
    PAPER_AUS,
    ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
)


# --------------------------------------------------------------------- reading runs


def read_runs(directory: Path) -> list[dict]:
    """The ``final.json`` of every finished multi-label run directly under ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no experiment directory at {directory}")
    runs = [final for final in results.load_finals(directory) if final.get("per_task_f1")]
    for final in runs:
        final["_dir"] = str(directory)
    return runs


def task_order(names: Iterable[str]) -> list[str]:
    names = list(names)
    for order in TASK_ORDERS:
        if set(names) <= set(order):
            return [name for name in order if name in names]
    return sorted(names, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def _changed_hparams(final: Mapping) -> dict:
    from tfq_noise import methods

    defaults = methods.default_hparams(final["method"])
    return {k: v for k, v in sorted((final.get("hparams") or {}).items()) if defaults.get(k) != v}


def _head_bits_text(layer_bits: Mapping[str, Sequence[int]]) -> str:
    """``{'head_a_dense': [8, 8], 'head_b_dense': [2, 4]}`` → ``heads W8/A8 {a}, W2/A4 {b}``."""
    groups: dict[tuple[int, int], list[str]] = {}
    other = []
    for name, bits in layer_bits.items():
        match = re.fullmatch(r"head_(.+)_(dense|hidden)", name)
        if match:
            groups.setdefault(tuple(bits), []).append(match.group(1))
        else:
            other.append(f"{name} W{bits[0]}/A{bits[1]}")
    parts = []
    for bits, tasks in sorted(groups.items(), reverse=True):
        tasks = task_order(tasks)  # the table's column order, whatever the order of the stored keys
        parts.append(f"W{bits[0]}/A{bits[1]}" if len(groups) == 1 else f"W{bits[0]}/A{bits[1]} {{{', '.join(tasks)}}}")
    text = ("heads " + ", ".join(parts)) if parts else ""
    return "; ".join([t for t in [text, *other] if t])


def row_label(method: str, changed: Mapping, drop_early_stopping: bool) -> str:
    names = [n for n in method.split("+") if n]
    if drop_early_stopping:
        names = [n for n in names if n != "early_stopping"]
    label = " + ".join(METHOD_LABELS.get(n, n) for n in names) or "Baseline"
    settings = []
    for key, value in changed.items():
        if key == "layer_bits" and isinstance(value, Mapping) and value:
            settings.append(_head_bits_text(value))
        elif key == "head_bits" and isinstance(value, Mapping) and value:
            settings.append(_head_bits_text({f"head_{task}_dense": bits for task, bits in value.items()}))
        else:
            settings.append(f"{key}={json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return f"{label} [{'; '.join(settings)}]" if settings else label


def _pruning_skipped(final: Mapping) -> bool:
    """True if a pruning run's kept epoch comes before the pruning (early stopping kept an unpruned model)."""
    if "pruning" not in final["method"].split("+"):
        return False
    hp = final.get("hparams") or {}
    prune_epoch = int(round(float(hp.get("prune_epoch_fraction", 0.5)) * int(final["epochs"])))
    return int(final.get("selected_epoch", final.get("epochs_trained", 0))) < prune_epoch


# --------------------------------------------------------------------- the table


def build_table(directories: Sequence[Path], methods: Sequence[str] = (), seeds: Sequence[int] = ()) -> dict:
    """Rows (label, per-task mean/std, average mean/std, seeds) from the runs of ``directories``.

    ``methods`` / ``seeds``, when given, keep only the runs of those methods (every setting of
    each, e.g. all head bit-widths of ``quantization+early_stopping``) and of those seeds: a
    comparison can then take its reference rows from another experiment's folder, on the same seeds.
    """
    runs = [run for d in directories for run in read_runs(Path(d))]
    for name, wanted, held in (("methods", set(methods), {run["method"] for run in runs}),
                               ("seeds", set(seeds), {int(run["seed"]) for run in runs})):
        if wanted - held:  # a typo would otherwise drop a row without a word
            raise ValueError(f"{name} {sorted(wanted - held)} have no finished run in "
                             f"{[str(d) for d in directories]} (they hold {sorted(held)})")
    if methods:
        runs = [run for run in runs if run["method"] in set(methods)]
    if seeds:
        runs = [run for run in runs if int(run["seed"]) in set(seeds)]
    if not runs:
        raise ValueError(f"no finished multi-label runs (final.json with per_task_f1) in {[str(d) for d in directories]}"
                         + (f" for methods {list(methods)}" if methods else "")
                         + (f" and seeds {list(seeds)}" if seeds else ""))
    tasks = task_order(runs[0]["per_task_f1"])
    for run in runs:
        if set(run["per_task_f1"]) != set(tasks):
            raise ValueError(f"run {run.get('run')} in {run['_dir']} has tasks {sorted(run['per_task_f1'])}, "
                             f"others {tasks}: one table holds one task set")
    for directory in directories:
        settings = {json.dumps(r.get("dataset_kwargs", {}), sort_keys=True) for r in runs if r["_dir"] == str(directory)}
        if len(settings) > 1:
            raise ValueError(f"runs in {directory} differ in dataset_kwargs ({' vs '.join(sorted(settings))}): one "
                             "table holds one data setting; run each setting into its own --experiment")
    across = {json.dumps({k: v for k, v in r.get("dataset_kwargs", {}).items() if k != "fold"}, sort_keys=True)
              for r in runs}
    if len(across) > 1:
        raise ValueError(f"the directories hold different data settings ({' vs '.join(sorted(across))}): folds are "
                         "averaged, settings are not; compare settings with --side_by_side")
    drop_es = all("early_stopping" in r["method"].split("+") for r in runs)
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(row_label(run["method"], _changed_hparams(run), drop_es), []).append(run)

    def order(label: str):
        base = label.split(" [")[0]
        return (ROW_ORDER.index(base) if base in ROW_ORDER else len(ROW_ORDER), label)

    rows = []
    for label in sorted(groups, key=order):
        by_seed: dict[int, list[np.ndarray]] = {}
        for run in groups[label]:
            scores = [run["per_task_f1"][t] for t in tasks]
            scores = [np.nan if s is None else float(s) for s in scores]
            by_seed.setdefault(int(run["seed"]), []).append(np.array(scores + [np.mean(scores)]))
        row_seeds = sorted(by_seed)
        per_seed = np.array([np.mean(by_seed[s], axis=0) for s in row_seeds]) * 100.0  # [S, T + 1]
        mean = per_seed.mean(axis=0)
        std = per_seed.std(axis=0, ddof=1) if len(row_seeds) > 1 else np.zeros_like(mean)
        rows.append({
            "label": label,
            "method": groups[label][0]["method"],
            "seeds": row_seeds,
            "seed_average": {seed: float(avg) for seed, avg in zip(row_seeds, per_seed[:, -1])},
            "runs": len(groups[label]),
            "folds_per_seed": sorted({len(v) for v in by_seed.values()}),
            "mean": mean, "std": std,
            "task_spread": float(np.std(mean[:-1])),
            "unpruned_runs": sum(_pruning_skipped(r) for r in groups[label]),
            "epochs_kept": [int(r.get("selected_epoch", -1)) + 1 for r in groups[label]],
        })
    datasets = sorted({str(r.get("dataset")) for r in runs})
    thresholds = sorted({r["decision_threshold"] for r in runs if r.get("decision_threshold") is not None})
    ceilings = sorted({r["oracle_average_f1"] for r in runs if r.get("oracle_average_f1") is not None})
    setting = json.loads(next(iter(across)))
    return {"tasks": tasks, "decision_thresholds": thresholds, "oracle_average_f1": ceilings, "rows": rows,
            "datasets": datasets, "drop_early_stopping": drop_es, "directories": [str(d) for d in directories],
            "methods": list(methods), "seeds": sorted(seeds),
            "setting": ", ".join(f"{k}={v}" for k, v in sorted(setting.items()))}


def paired_gain(row: Mapping, baseline: Mapping | None) -> str:
    """Average-F1 gain over the Baseline, paired by seed (a seed fixes the label draw, the validation split
    and the random seed of every method alike): mean ± sample std of the per-seed differences on the seeds both
    rows hold, with how many of them are positive, e.g. ``+1.1 ± 1.9 (4/5 > 0)``."""
    if baseline is None:
        return "–"
    if row is baseline:
        return "+0.0" if row["seed_average"] else "–"
    return stats.Paired.of(stats.paired_differences(row["seed_average"], baseline["seed_average"])).text()


def paired_differences(row: Mapping, baseline: Mapping | None) -> np.ndarray:
    """Per-seed average-F1 differences to the Baseline, on the seeds both rows hold."""
    if baseline is None:
        return np.zeros(0)
    return np.array(list(stats.paired_differences(row["seed_average"], baseline["seed_average"]).values()))


def _fmt(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def paper_markdown() -> str:
    lines = ["| F1 (%) | " + " | ".join(a.replace("AU", "") for a in PAPER_AUS) + " | Avg. |",
             "|---|" + "---:|" * (len(PAPER_AUS) + 1)]
    for label, (values, avg) in PAPER_BP4D.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {avg:.1f} |")
    return "\n".join(lines)


def to_markdown(table: Mapping) -> str:
    tasks, rows = table["tasks"], table["rows"]
    baseline = next((r for r in rows if r["label"] == "Baseline"), None)
    header = ["Method", *tasks, "Avg.", "Δ Avg. vs Baseline (paired)", "σ across tasks", "seeds"]
    lines = [
        f"# Table 1 layout: {', '.join(table['datasets'])}",
        "",
        f"Runs from {', '.join(table['directories'])}"
        + (f", methods {', '.join(table['methods'])} only" if table.get("methods") else "")
        + (f", seeds {', '.join(map(str, table['seeds']))} only" if table.get("seeds") else "")
        + ". Test F1 per task and average F1, in percent, "
        "mean ± std over seeds (sample std)"
        + (", a seed's score being the mean over the directories that hold its run (folds)" if len(table["directories"]) > 1 else "")
        + ". Δ: the gain over the Baseline paired by seed (a seed fixes the label draw, the validation split and "
        "the random seed of every method alike), mean ± std of the per-seed differences and how many are positive. "
        + (f"Decision threshold {', '.join(map(str, table['decision_thresholds']))}. "
                  if table.get("decision_thresholds") else "")
        + ("Every method stops early on the validation average F1 (Baseline = early stopping alone)."
                  if table["drop_early_stopping"] else "Methods as named (early stopping only where listed)."),
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for row in rows:
        n = len(row["seeds"])
        cells = [_fmt(m, s, n) for m, s in zip(row["mean"], row["std"])]
        delta = paired_gain(row, baseline)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {delta} | {row['task_spread']:.1f} | {n} |")
    notes = []
    if baseline is not None and any(r["seeds"] != baseline["seeds"] for r in rows):
        notes.append("Rows hold different seeds (a run missing or failed): Δ is paired over the seeds both rows hold, "
                     "the averages are over each row's own seeds.")
    for row in rows:
        if len(row["folds_per_seed"]) > 1:
            notes.append(f"{row['label']}: seeds have different numbers of folds {row['folds_per_seed']} (incomplete grid).")
        if row["unpruned_runs"]:
            notes.append(f"{row['label']}: in {row['unpruned_runs']} of {row['runs']} runs early stopping kept an epoch "
                         "before the pruning epoch, i.e. an unpruned model.")
    if notes:
        lines += ["", "**Warnings**", ""] + [f"- {n}" for n in notes]
    if table.get("oracle_average_f1"):
        lines += ["", "Ceiling at this decision threshold (a model that knew each test image's 10-vote shares): "
                  + ", ".join(f"{100 * c:.1f}" for c in table["oracle_average_f1"]) + " average F1."]
    lines += [
        "",
        f"Epochs kept (selected epoch + 1) per row: "
        + "; ".join(f"{r['label']}: {min(r['epochs_kept'])}–{max(r['epochs_kept'])}" for r in rows) + ".",
        "",
        "## The paper's Table 1 (BP4D, F1 %, one number per cell, 5 runs averaged)",
        "",
        paper_markdown(),
        "",
    ]
    if "bp4d" not in table["datasets"]:
        lines += ["The paper's numbers are on BP4D action units; these runs are on "
                  f"{', '.join(table['datasets'])}: compare gains over the Baseline, not absolute F1.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------- figure


def save_figure(table: Mapping, path: Path, inputs: Sequence[Path] | None = None, command: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import textwrap

    tasks, rows = table["tasks"], table["rows"]
    columns = [*tasks, "Avg."]
    means = np.array([r["mean"] for r in rows])
    baseline = next((r for r in rows if r["label"] == "Baseline"), None)
    labels = ["\n".join(textwrap.wrap(r["label"], 34)) for r in rows]
    height = max(3.5, 0.4 * sum(l.count("\n") + 1 for l in labels) + 0.25 * len(rows) + 2.0)
    fig, (ax_map, ax_bar) = plt.subplots(
        1, 2, figsize=(max(10.0, 0.85 * len(columns) + 6.5), height),
        gridspec_kw={"width_ratios": [max(len(columns), 4), 3.2]}, constrained_layout=True)
    if baseline is not None:
        shade = means - baseline["mean"][None, :]
        limit = max(1.0, float(np.nanmax(np.abs(shade))))
        image = ax_map.imshow(shade, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        fig.colorbar(image, ax=ax_map, shrink=0.8, label="F1 − Baseline F1 (points)")
        dark = np.abs(shade) > 0.6 * limit
    else:
        image = ax_map.imshow(means, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax_map, shrink=0.8, label="F1 (%)")
        dark = means < np.nanmin(means) + 0.5 * (np.nanmax(means) - np.nanmin(means))
    for i in range(means.shape[0]):
        for j in range(means.shape[1]):
            if not math.isnan(means[i, j]):
                ax_map.text(j, i, f"{means[i, j]:.1f}", ha="center", va="center", fontsize=8,
                            color="white" if dark[i, j] else "black",
                            fontweight="bold" if j == len(columns) - 1 else "normal")
    ax_map.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax_map.set_yticks(range(len(rows)), labels, fontsize=8)
    ax_map.axvline(len(columns) - 1.5, color="black", linewidth=1)
    ax_map.set_title("Test F1 per task (%), mean over seeds")

    y = np.arange(len(rows))
    avg = means[:, -1]
    std = np.array([r["std"][-1] for r in rows])
    # One colour per method, as in every figure (a combination takes its first method's: quantization+early_stopping
    # is W4/A4's red).
    colors = [method_color("quantization W4/A4" if r["method"].startswith("quantization") else r["method"])
              for r in rows]
    ax_bar.barh(y, avg, xerr=std, color=colors, alpha=0.8, capsize=3)
    right = avg + std
    if "bp4d" in table["datasets"]:
        paper = np.array([PAPER_BP4D.get(r["label"], (None, np.nan))[1] for r in rows], float)
        ax_bar.scatter(paper, y, marker="D", color="black", zorder=3, label="paper (BP4D)")
        ax_bar.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False)
        right = np.fmax(right, paper)
    low = float(np.nanmin(avg - std)) if len(avg) else 0.0
    high = float(np.nanmax(right)) if len(avg) else 1.0
    pad = max(1.0, 0.12 * (high - low))
    ax_bar.set_xlim(max(0.0, low - pad), min(100.0, high + 2.5 * pad))
    ax_bar.set_yticks(y, [""] * len(rows))
    ax_bar.set_ylim(len(rows) - 0.5, -0.5)
    ax_bar.set_xlabel("average F1 (%), mean ± std over seeds")
    ax_bar.grid(axis="x", alpha=0.3)
    for yi, (m, r) in enumerate(zip(avg, right)):
        ax_bar.text(r + 0.3 * pad, yi, f"{m:.1f}", va="center", fontsize=8, fontweight="bold")
    fig.suptitle(f"Table 1 layout — {', '.join(table['datasets'])}", fontsize=11)
    results.atomic_save_figure(fig, Path(path), inputs=inputs, command=command, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------- settings side by side


def _setting_name(table: Mapping) -> str:
    """A table's folder and data setting, e.g. ``ferplus_k1 (annotators=1, decision_threshold=0.15, threshold=2)``."""
    return Path(table["directories"][0]).name + (f" ({table['setting']})" if table.get("setting") else "")


def build_side_by_side(directories: Sequence[Path], methods: Sequence[str] = (), seeds: Sequence[int] = ()) -> list[dict]:
    """One table per directory, each its own data setting (e.g. k = 1 and k = 3 annotators)."""
    return [build_table([directory], methods, seeds) for directory in directories]


def _row_labels(tables: Sequence[Mapping]) -> list[str]:
    """Every row label of the tables, in first-seen order."""
    labels: list[str] = []
    for table in tables:
        labels += [r["label"] for r in table["rows"] if r["label"] not in labels]
    return labels


def side_by_side_markdown(tables: Sequence[Mapping]) -> str:
    labels = _row_labels(tables)
    names = [Path(t["directories"][0]).name for t in tables]
    lines = ["# Average F1 by data setting", "",
             "Test average F1 in percent, mean ± std over seeds (sample std), and the gain over each "
             "setting's own Baseline, paired by seed (mean ± std of the per-seed differences, and how many "
             "are positive). Settings:", ""]
    for table in tables:
        ceiling = ", ".join(f"{100 * c:.1f}" for c in table.get("oracle_average_f1") or [])
        lines.append(f"- {_setting_name(table)}" + (f"; ceiling {ceiling} average F1" if ceiling else ""))
    header = ["Method"] + [f"{n}: Avg. | Δ | seeds" for n in names]
    lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|---:|---:|" * len(tables)]
    by_label = [{r["label"]: r for r in table["rows"]} for table in tables]
    for label in labels:
        cells = []
        for rows in by_label:
            row, base = rows.get(label), rows.get("Baseline")
            if row is None:
                cells += ["–", "–", "0"]
                continue
            n = len(row["seeds"])
            cells += [_fmt(row["mean"][-1], row["std"][-1], n),
                      paired_gain(row, base), str(n)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def save_side_by_side_figure(tables: Sequence[Mapping], path: Path, inputs: Sequence[Path] | None = None,
                             command: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _row_labels(tables)
    fig, (ax_avg, ax_gain) = plt.subplots(1, 2, figsize=(11, 0.5 * len(labels) * len(tables) + 2.0),
                                          sharey=True, constrained_layout=True)
    height = 0.8 / len(tables)
    for i, table in enumerate(tables):
        rows = {r["label"]: r for r in table["rows"]}
        base = rows.get("Baseline")
        y = np.arange(len(labels)) + (i - (len(tables) - 1) / 2) * height
        avg = np.array([rows[l]["mean"][-1] if l in rows else np.nan for l in labels])
        std = np.array([rows[l]["std"][-1] if l in rows else np.nan for l in labels])
        name = Path(table["directories"][0]).name
        ax_avg.barh(y, avg, height, xerr=std, capsize=2, label=name, alpha=0.85)
        if base is not None:  # the table's Δ: paired by seed
            diffs = [paired_differences(rows[l], base) if l in rows else np.zeros(0) for l in labels]
            gain = np.array([d.mean() if len(d) else np.nan for d in diffs])
            spread = np.array([d.std(ddof=1) if len(d) > 1 else 0.0 for d in diffs])
            ax_gain.barh(y, gain, height, xerr=spread, capsize=2, label=name, alpha=0.85)
    ax_avg.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax_avg.set_ylim(len(labels) - 0.5, -0.5)
    ax_avg.set_xlabel("test average F1 (%), mean ± std over seeds")
    ax_gain.set_xlabel("gain over the setting's Baseline (points), paired by seed: mean ± std")
    ax_gain.axvline(0.0, color="black", linewidth=0.8)
    for ax in (ax_avg, ax_gain):
        ax.grid(axis="x", alpha=0.3)
    ax_avg.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, ncol=len(tables))
    fig.suptitle("Average F1 by data setting", fontsize=11)
    results.atomic_save_figure(fig, Path(path), inputs=inputs, command=command, dpi=130)
    plt.close(fig)


def write_side_by_side(directories: Sequence[Path], out: Path, methods: Sequence[str] = (),
                       seeds: Sequence[int] = ()) -> list[dict]:
    """Writes ``table1_side_by_side.md`` and ``.png`` into ``out``; returns the tables."""
    tables = build_side_by_side(directories, methods, seeds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results.atomic_write_text(out / "table1_side_by_side.md", side_by_side_markdown(tables))
    save_side_by_side_figure(tables, out / "table1_side_by_side.png", directories,
                             _command(directories, methods, seeds, f"--side_by_side --out={out.as_posix()}"))
    return tables


# --------------------------------------------------------------------- entry point


def paper_summary() -> str:
    return "Paper, BP4D average F1 (%): " + ", ".join(f"{k} {v[1]:.1f}" for k, v in PAPER_BP4D.items())


def write_table1(directories: Sequence[Path], out: Path | None = None,
                 methods: Sequence[str] = (), seeds: Sequence[int] = ()) -> dict:
    """Writes ``table1.md`` and ``table1.png`` into ``out`` (default: the first directory); returns the table."""
    table = build_table(directories, methods, seeds)
    out = Path(out) if out is not None else Path(directories[0])
    results.atomic_write_text(out / "table1.md", to_markdown(table))
    save_figure(table, out / "table1.png", directories,
                _command(directories, methods, seeds, "" if out == Path(directories[0]) else f"--out={out.as_posix()}"))
    return table


def _command(directories: Sequence[Path], methods: Sequence[str], seeds: Sequence[int], extra: str) -> str:
    """The command line that redraws a figure (recorded in it)."""
    parts = ["python -m experiments.table1", *(Path(d).as_posix() for d in directories)]
    parts += [f"--methods={','.join(methods)}"] * bool(methods) + [f"--seeds={','.join(map(str, seeds))}"] * bool(seeds)
    return " ".join(parts + [extra] * bool(extra))


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _seed_list(text: str) -> list[int]:
    try:
        return [int(item) for item in _comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directories", nargs="+", type=Path, help="results/<experiment> (several: folds)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first directory)")
    parser.add_argument("--methods", type=_comma_list, default=[],
                        help="keep only these methods, comma-separated (every setting of each), e.g. "
                             "early_stopping,quantization+early_stopping")
    parser.add_argument("--seeds", type=_seed_list, default=[], help="keep only these seeds, e.g. 0,1,2")
    parser.add_argument("--side_by_side", action="store_true",
                        help="each directory is its own data setting (e.g. k = 1 and k = 3 annotators): write "
                             "table1_side_by_side.md/.png into --out, average F1 and gain per setting")
    args = parser.parse_args(argv)
    if args.side_by_side and args.out is None:
        parser.error("--side_by_side needs --out (the directories are different experiments)")
    try:
        if args.side_by_side:
            tables = write_side_by_side(args.directories, args.out, args.methods, args.seeds)
            print(side_by_side_markdown(tables))
            print(f"wrote {args.out / 'table1_side_by_side.md'} and {args.out / 'table1_side_by_side.png'}")
            return 0
        table = write_table1(args.directories, args.out, args.methods, args.seeds)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or args.directories[0]
    print(to_markdown(table).split("\n## ")[0])
    print(paper_summary())
    print(f"wrote {out / 'table1.md'} and {out / 'table1.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

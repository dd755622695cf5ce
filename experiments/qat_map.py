"""A map of when QAT helps: the paired W4/A4 gain against how much the float baseline memorizes.

    python -m experiments.qat_map                    # every protocol under results/, into results/qat_map/
    python -m experiments.qat_map results --readme=docs/results/when_qat_helps.md   # ...and that page's table

One point per protocol (training-set size, augmentation, epochs, schedule) and noise setting where both
the float baseline and W4/A4 QAT (the paper's default: first/last layers W8/A8) have finished on the same
seeds: x is the share of its corrupted training examples the float baseline ends predicting as their wrong
label (its memorization), y the per-seed difference of clean test accuracy at the last epoch, W4/A4 minus
baseline, averaged over the paired seeds (sample std over seeds as the error bar). With clean labels
(s = 0) there is nothing to memorize: those points are drawn at x = 0 with their own marker.
The table gives every point's seeds, both accuracies, the paired gain with how many seeds gain, and a
two-sided paired t-test and sign test of the per-seed differences (:class:`tfq_noise.stats.PairedTest`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import blocks, tables  # noqa: E402
from tfq_noise import results, stats  # noqa: E402

# The folders below the results root that hold CIFAR-10 protocols of ResNet20 (recipes, the paper's protocol,
# the small-data regime): every protocol the project has.
PROTOCOL_FOLDERS = ("recipe_search", "paper", "cpu_cifar10", "cpu_cifar10n")
OUTPUT = "qat_map"
BASELINE, QAT = "baseline", "quantization W4/A4"
FIGURE, SUMMARY, TABLE = "qat_map.png", "qat_map.md", "qat_map.csv"
AUGMENT_NAMES = {"none": "no augmentation", "flip": "flip", "crop_flip": "crop + flip", False: "no augmentation",
                 True: "crop + flip"}


def experiment_dirs(roots: Sequence[Path]) -> list[Path]:
    """The folders below ``roots`` that hold finished runs (``*/final.json``), each once, sorted."""
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for final in root.rglob(results.FINAL):
            run_dir = final.parent
            if run_dir.parent.name != results.FOLDS:  # a confident-learning fold is not a run of its own
                found.add(run_dir.parent)
    return sorted(found)


def _config(final: Mapping) -> dict:
    path = Path(final["run_dir"]) / results.CONFIG
    return results.read_json(path) if path.exists() else {}


def protocol(final: Mapping) -> dict:
    """What defines a run's protocol: training images, augmentation, epochs, learning-rate schedule."""
    config = _config(final)
    augment = config.get("augment", "none")
    return {"train_images": tables.train_examples(final), "augment": AUGMENT_NAMES.get(augment, str(augment)),
            "epochs": final["epochs"], "schedule": config.get("lr_schedule", "constant")}


def protocol_name(p: Mapping) -> str:
    images = "?" if p["train_images"] is None else f"{p['train_images'] / 1000:g}k"
    return f"{images} images, {p['augment']}, {p['epochs']} epochs, {p['schedule']} LR"


def _noise_name(noise_type: str, rate: float) -> str:
    return f"s = {100 * rate:g}%" if noise_type == "symmetric" else f"CIFAR-10N {noise_type}"


def map_points(experiment_dirs_: Sequence[Path]) -> list[dict]:
    """One point per (experiment, noise setting) with baseline and W4/A4 runs on common seeds."""
    points = []
    for directory in experiment_dirs_:
        finals = [f for f in results.load_finals(directory) if f.get("dataset", "cifar10") == "cifar10"]
        groups: dict[tuple, dict[str, dict[int, dict]]] = {}
        for final in finals:
            label = tables.variant_label(final)
            if label not in (BASELINE, QAT):
                continue
            key = (final["noise_type"], round(float(final["noise_rate"]), 4))
            groups.setdefault(key, {}).setdefault(label, {})[final["seed"]] = final
        for (noise_type, rate), by_label in sorted(groups.items()):
            base, qat = by_label.get(BASELINE, {}), by_label.get(QAT, {})
            seeds = sorted(set(base) & set(qat))
            if not seeds:
                continue
            accuracy = lambda f: 100 * f["test_accuracy"]  # noqa: E731  (last epoch; no method here selects one)
            differences = {s: accuracy(qat[s]) - accuracy(base[s]) for s in seeds}
            paired, test = stats.Paired.of(differences), stats.PairedTest.of(differences)
            corrupted = noise_type != "symmetric" or rate > 0  # s = 0: no wrong label to memorize
            memorized = [100 * base[s]["last_memorized"] for s in seeds
                         if corrupted and base[s].get("last_memorized") is not None]
            qat_memorized = [100 * qat[s]["last_memorized"] for s in seeds
                             if corrupted and qat[s].get("last_memorized") is not None]
            proto = protocol(base[seeds[0]])
            points.append({
                "experiment": directory.as_posix(), "protocol": protocol_name(proto), **proto,
                "noise": _noise_name(noise_type, rate), "noise_type": noise_type, "noise_rate": rate,
                "seeds": seeds, "baseline": stats.mean_std([accuracy(base[s]) for s in seeds]),
                "w4a4": stats.mean_std([accuracy(qat[s]) for s in seeds]),
                "baseline_memorized": stats.mean_std(memorized)[0] if memorized else None,
                "w4a4_memorized": stats.mean_std(qat_memorized)[0] if qat_memorized else None,
                "differences": differences, "gain": paired, "test": test})
    return points


def _pct(value, digits=1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(points: Sequence[Mapping], command: str) -> str:
    lines = [f"Generated by `{command}` from {sum(len(p['seeds']) * 2 for p in points)} committed runs.", "",
             "| protocol | noise | seeds | baseline % | W4/A4 % | W4/A4 gain, points (seeds gaining) | paired tests "
             "| baseline memorized % | W4/A4 memorized % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p["noise_type"] != "symmetric", p["noise_rate"], p["protocol"])):
        lines.append(f"| {p['protocol']} | {p['noise']} | {len(p['seeds'])} | {tables.mean_text(p['baseline'])} "
                     f"| {tables.mean_text(p['w4a4'])} | {p['gain'].text()} | {p['test'].text()} "
                     f"| {_pct(p['baseline_memorized'], 0)} | {_pct(p['w4a4_memorized'], 0)} |")
    costs = [p for p in points if p["gain"].mean < 0]
    lines += ["", "Accuracies: clean test accuracy at the last epoch, mean ± sample std over the paired seeds. Gain: "
              "mean ± sample std of the per-seed differences (W4/A4 − baseline, same images and noise draw). "
              "Paired tests, two-sided: Student's t on the per-seed differences and the exact sign test "
              "(with 3 seeds its smallest p is 0.25). Memorized: corrupted training examples predicted as their "
              "wrong label at the last epoch (inference mode).", ""]
    if costs:
        lines.append("Where W4/A4 costs accuracy (mean gain below 0): " + "; ".join(
            f"{p['protocol']}, {p['noise']}: {p['gain'].text()}" for p in costs) + ".")
    else:
        lines.append("W4/A4 costs accuracy at no point of the map so far.")
    return "\n".join(lines) + "\n"


# One colour per protocol, in a fixed order of increasing realism (more images, augmentation, longer schedule).
PALETTE = ("tab:gray", "tab:red", "tab:purple", "tab:orange", "tab:blue", "tab:green", "tab:brown", "tab:pink")


def _protocol_order(p: Mapping) -> tuple:
    augment_rank = {"no augmentation": 0, "flip": 1, "crop + flip": 2}.get(p["augment"], 3)
    return (p["epochs"] >= 100, augment_rank, p["train_images"] or 0, p["schedule"])


def plot(points: Sequence[Mapping], path: Path, inputs: Sequence[Path], command: str) -> bool:
    from matplotlib.lines import Line2D

    protocols = sorted({p["protocol"]: p for p in points}.values(), key=_protocol_order)
    colors = {p["protocol"]: PALETTE[i % len(PALETTE)] for i, p in enumerate(protocols)}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    drawn = 0
    for p in points:
        clean = p["noise_type"] == "symmetric" and p["noise_rate"] == 0
        x = 0.0 if clean else p["baseline_memorized"]
        if x is None:
            continue
        color = colors[p["protocol"]]
        if p["gain"].n > 1:
            ax.errorbar(x, p["gain"].mean, yerr=p["gain"].std, fmt="none", ecolor=color, alpha=0.6, capsize=3)
        marker = "s" if clean else ("o" if p["noise_type"] == "symmetric" else "D")
        ax.scatter(x, p["gain"].mean, s=70, marker=marker, facecolors="white" if clean else color,
                   edgecolors=color, linewidths=1.8, zorder=3)
        ax.annotate(p["noise"].replace("CIFAR-10N ", "10N "), (x, p["gain"].mean), fontsize=9, xytext=(5, 3),
                    textcoords="offset points", color=color)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("float baseline: corrupted training labels memorized at the end (%)", fontsize=11)
    ax.set_ylabel("W4/A4 QAT − float baseline, clean test\naccuracy (points, mean over paired seeds)", fontsize=11)
    ax.set_title("W4/A4 gain against the float baseline's memorization, per protocol", fontsize=12)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[p["protocol"]], marker="o", linestyle="", markersize=8,
                      label=p["protocol"]) for p in protocols]
    handles += [Line2D([], [], color="black", marker=m, linestyle="", markersize=7, markerfacecolor=f, label=t)
                for m, f, t in (("o", "black", "symmetric noise s"), ("D", "black", "CIFAR-10N human noise"),
                                ("s", "white", "s = 0 (no wrong labels: drawn at 0)"))]
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    results.atomic_save_figure(fig, path, inputs=inputs, dpi=110, bbox_inches="tight", command=command)
    plt.close(fig)
    return True


def csv_rows(points: Sequence[Mapping]) -> list[dict]:
    rows = []
    for p in points:
        for seed, difference in sorted(p["differences"].items()):
            rows.append({"experiment": p["experiment"], "protocol": p["protocol"], "noise": p["noise"], "seed": seed,
                         "gain_points": round(difference, 4), "baseline_memorized_mean": p["baseline_memorized"]})
    return rows


def roots_of(results_root: Path) -> list[Path]:
    return [Path(results_root) / name for name in PROTOCOL_FOLDERS]


def _command(results_root, page=None) -> str:
    root = Path(results_root).as_posix()
    return "python -m experiments.qat_map" + ("" if root == "results" else f" {root}") + (
        f" {blocks.readme_option(page)}" if page else "")


def _points(results_root: Path) -> tuple[list[Path], list[dict]]:
    dirs = experiment_dirs(roots_of(results_root))
    points = map_points(dirs)
    if not points:
        raise FileNotFoundError(f"no protocol under {Path(results_root).as_posix()}/{{{','.join(PROTOCOL_FOLDERS)}}} "
                                "has finished baseline and W4/A4 runs on a common seed")
    return dirs, points


def readme_block(results_root, name: str | None = None, page: str = blocks.README) -> str:
    """The map's table for a page's ``<!-- qatmap:begin RESULTS_ROOT -->`` block."""
    _, points = _points(Path(results_root))
    return markdown(points, _command(name or results_root, page))


def write(results_root) -> str:
    results_root = Path(results_root)
    dirs, points = _points(results_root)
    output_dir = results_root / OUTPUT
    output_dir.mkdir(parents=True, exist_ok=True)
    command = _command(results_root)
    text = markdown(points, command)
    figure = plot(points, output_dir / FIGURE, dirs, command)
    results.write_csv(output_dir / TABLE, csv_rows(points))
    results.atomic_write_text(output_dir / SUMMARY, "# When QAT helps\n\n" + text
                              + (f"\n![When QAT helps]({FIGURE})\n" if figure else ""))
    print(text)
    return text


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not [a for a in argv if not a.startswith("-")]:
        argv = ["results", *argv]
    return blocks.folder_command(argv, "python -m experiments.qat_map", __doc__.split("\n\n")[0], "qatmap", write,
                                 readme_block, "results")


if __name__ == "__main__":
    sys.exit(main())

"""Figures and a Markdown summary of an experiment's runs.

    python -m experiments.report results/cpu_cifar10

Writes into the experiment folder:

* ``accuracy_vs_noise.png`` — the paper's Fig. 2: accuracy gain over the
  baseline (top) and clean test accuracy (bottom) against the noise rate s,
  mean ± std over seeds, for the mean of the last five epochs and the last epoch;
* ``loss_curves.png`` — Fig. 1: training loss (noisy labels) and test loss
  (clean labels) of the baseline and of quantization, per epoch;
* ``memorization.png`` — per epoch and method: the share of corrupted
  training examples predicted as their wrong label (memorized) and as their
  true label, and the clean test accuracy;
* ``robustness.png`` — Fig. 3, when a method was run with several settings:
  gain of each setting over the method's default setting, against s;
* ``summary.md`` — the tables behind the figures;
* ``runs.csv`` — one row per finished run (its final.json's scalars), for other tools.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfq_noise import methods, results  # noqa: E402

HUMAN_NOISE = ("aggre", "random1", "random2", "random3", "worst")
METRICS = (("test_accuracy_last5", "mean of last 5 epochs"), ("test_accuracy", "last epoch"))
# The paper's Fig. 2 (ResNet20, CIFAR-10, 50k images, 200 epochs), read off the plot: s → clean test
# accuracy in % of (baseline, quantization W4/A4). Shown beside symmetric-noise CIFAR-10 results.
PAPER_FIG2 = {0.0: (90.0, 91.0), 0.2: (83.0, 86.0), 0.4: (77.0, 82.0), 0.6: (62.0, 74.0), 0.8: (38.0, 58.0)}


def _compares_with_paper(finals) -> bool:
    return bool(finals) and all(f["dataset"] == "cifar10" and f["noise_type"] == "symmetric" for f in finals)


def variant_label(final: dict) -> str:
    """'quantization W4/A4', 'dropout (dropout_rate=0.3)', ... from a final.json."""
    method, hp = final["method"], final.get("hparams", {})
    defaults = methods.default_hparams(method)
    changed = {k: v for k, v in hp.items() if defaults.get(k) != v}
    label = method
    if "quantization" in method:
        label = method.replace("quantization", f"quantization W{hp['weight_bits']}/A{hp['activation_bits']}")
        changed = {k: v for k, v in changed.items() if k not in ("weight_bits", "activation_bits")}
    if changed:
        label += " (" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"
    return label


def _png(fig, path: Path) -> None:
    results.atomic_save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _group(finals, noise_filter):
    """{label: {rate: [finals]}} for the finals whose noise type passes the filter."""
    grouped = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in finals:
        if noise_filter(f["noise_type"]):
            grouped[variant_label(f)][f["noise_rate"]].append(f)
    return grouped


def _stats(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None, None, 0
    # Sample std (n - 1), as in Table 1; 0 for a single run.
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def _is_default_variant(label: str) -> bool:
    return "(" not in label and "W8/A8" not in label and "W2/" not in label and "W3/" not in label


def plot_accuracy_vs_noise(grouped, path: Path, paper_reference: bool = False) -> bool:
    baseline = grouped.get("baseline")
    labels = sorted(grouped, key=lambda l: (l != "baseline", l))
    if not labels:
        return False
    fig, axes = plt.subplots(2, len(METRICS), figsize=(6.5 * len(METRICS), 8), squeeze=False, sharex=True)
    for col, (key, title) in enumerate(METRICS):
        for label in labels:
            rates = sorted(grouped[label])
            means = [_stats(grouped[label][r], key)[0] for r in rates]
            stds = [_stats(grouped[label][r], key)[1] for r in rates]
            style = dict(marker="o", capsize=3, label=label, linewidth=2.5 if "quantization" in label else 1.2)
            axes[1, col].errorbar(np.array(rates) * 100, np.array(means) * 100, yerr=np.array(stds) * 100, **style)
            if baseline:
                shared = [r for r in rates if r in baseline]
                gains = [(_stats(grouped[label][r], key)[0] - _stats(baseline[r], key)[0]) * 100 for r in shared]
                axes[0, col].plot(np.array(shared) * 100, gains, marker="o", label=label,
                                  linewidth=style["linewidth"])
        axes[0, col].axhline(0, color="gray", linewidth=0.8)
        if paper_reference:
            rates = sorted(PAPER_FIG2)
            (paper_line,) = axes[0, col].plot(
                np.array(rates) * 100, [PAPER_FIG2[r][1] - PAPER_FIG2[r][0] for r in rates],
                color="black", linestyle=":", marker="x", label="paper Fig. 2: quantization W4/A4 (read off, 200 epochs)")
        axes[0, col].set_title(f"Gain over baseline ({title})")
        axes[0, col].set_ylabel("accuracy gain (points)")
        axes[1, col].set_title(f"Clean test accuracy ({title})")
        axes[1, col].set_ylabel("test accuracy (%)")
        for ax in axes[:, col]:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("training labels re-drawn at random, s (%)")
            ax.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=8, loc="lower left")
    if paper_reference:
        axes[0, 0].legend(handles=[paper_line], fontsize=8, loc="upper left")
    fig.subplots_adjust(hspace=0.35)
    _png(fig, path)
    return True


def _histories(finals):
    return {f["run_dir"]: results.read_csv(Path(f["run_dir"]) / results.HISTORY) for f in finals}


def _pick_rate(grouped, wanted=0.4):
    rates = sorted({r for by_rate in grouped.values() for r in by_rate})
    if not rates:
        return None
    return wanted if wanted in rates else max(rates)


def _setting_text(setting) -> str:
    """A noise setting for a title: a rate of synthetic noise, or a CIFAR-10N label set by name."""
    return f"CIFAR-10N {setting}" if isinstance(setting, str) else f"s = {setting:.0%}"


def plot_loss_curves(grouped, histories, rate, path: Path) -> bool:
    pairs = [(l, c) for l, c in (("baseline", "tab:blue"), ("quantization W4/A4", "tab:red")) if l in grouped]
    if rate is None or not pairs:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    later = []  # values after the first epoch, whose test loss can be off the chart
    for label, color in pairs:
        for run in grouped[label].get(rate, [])[:1]:
            h = histories[run["run_dir"]]
            epochs = [r["epoch"] + 1 for r in h]
            ax.plot(epochs, [r["loss"] for r in h], color=color, linestyle="--", label=f"{label}: train (noisy)")
            later += [r["loss"] for r in h[1:]]
            if all("test_loss" in r for r in h):
                ax.plot(epochs, [r["test_loss"] for r in h], color=color, label=f"{label}: test (clean)")
                later += [r["test_loss"] for r in h[1:]]
    if later:
        ax.set_ylim(0, 1.15 * max(later))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"Training and test loss, {_setting_text(rate)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _png(fig, path)
    return True


def plot_memorization(grouped, histories, rate, path: Path) -> bool:
    labels = [l for l in sorted(grouped, key=lambda l: (l != "baseline", l)) if grouped[l].get(rate)]
    if rate is None or not labels:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for label in labels:
        h = histories[grouped[label][rate][0]["run_dir"]]
        epochs = [r["epoch"] + 1 for r in h]
        width = 2.5 if "quantization" in label else 1.2
        for ax, key in zip(axes, ("memorized", "corrected", "test_accuracy")):
            if all(key in r for r in h):
                ax.plot(epochs, [100 * r[key] for r in h], label=label, linewidth=width)
    titles = ("Corrupted examples predicted as their wrong label", "Corrupted examples predicted as their true label",
              "Clean test accuracy")
    for ax, title in zip(axes, titles):
        ax.set_title(f"{title} ({_setting_text(rate)})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    _png(fig, path)
    return True


def plot_robustness(grouped, path: Path) -> bool:
    """Each non-default setting of a method against the method's default setting (Fig. 3)."""
    families = collections.defaultdict(list)
    for label in grouped:
        families[label.split(" ")[0]].append(label)
    families = {m: ls for m, ls in families.items() if len(ls) > 1}
    if not families:
        return False
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), squeeze=False)
    for ax, (method, labels) in zip(axes[0], sorted(families.items())):
        reference = next((l for l in labels if _is_default_variant(l)), labels[0])
        for label in sorted(labels):
            rates = sorted(r for r in grouped[label] if r in grouped[reference])
            gains = [(_stats(grouped[label][r], "test_accuracy_last5")[0]
                      - _stats(grouped[reference][r], "test_accuracy_last5")[0]) * 100 for r in rates]
            ax.plot(np.array(rates) * 100, gains, marker="o", label=label)
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_title(f"{method}: gain over {reference}", fontsize=10)
        ax.set_xlabel("s (%)")
        ax.set_ylabel("gain, mean of last 5 epochs (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _png(fig, path)
    return True


def _fmt(mean, std, n):
    if mean is None:
        return "—"
    return f"{100 * mean:.1f} ± {100 * std:.1f} (n={n})" if n > 1 else f"{100 * mean:.1f}"


def _paper_comparison(grouped) -> list[str]:
    """Rows of s: the paper's Fig. 2 beside this experiment's baseline and W4/A4 (mean over seeds)."""
    ours, base = grouped.get("quantization W4/A4", {}), grouped.get("baseline", {})
    lines = ["## Against the paper's Fig. 2 (its values read off the plot; 50k images, 200 epochs)", "",
             "| s | paper baseline | paper W4/A4 | paper gain | baseline, last 5 | W4/A4, last 5 | gain, last 5 "
             "| gain, last epoch |", "|---|---|---|---|---|---|---|---|"]
    for rate in sorted(set(PAPER_FIG2) | set(base) | set(ours)):
        paper = PAPER_FIG2.get(rate)
        cells = [f"{rate:.0%}"] + ([f"{paper[0]:.0f}", f"{paper[1]:.0f}", f"{paper[1] - paper[0]:+.0f}"]
                                   if paper else ["—"] * 3)
        b5, q5 = _stats(base.get(rate, []), "test_accuracy_last5"), _stats(ours.get(rate, []), "test_accuracy_last5")
        b1, q1 = _stats(base.get(rate, []), "test_accuracy")[0], _stats(ours.get(rate, []), "test_accuracy")[0]
        cells += [_fmt(*b5), _fmt(*q5)]
        cells += [f"{100 * (q5[0] - b5[0]):+.1f}" if q5[0] is not None and b5[0] is not None else "—",
                  f"{100 * (q1 - b1):+.1f}" if q1 is not None and b1 is not None else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _method_by_rate_table(grouped, rates, key, gains: bool) -> list[str]:
    """Markdown rows: one per method variant (baseline first), one column per noise rate, mean ± std of ``key``."""
    baseline = grouped.get("baseline", {})
    lines = ["| method | " + " | ".join(f"s = {r:.0%}" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for label in sorted(grouped, key=lambda l: (l != "baseline", l)):
        cells = []
        for r in rates:
            mean, std, n = _stats(grouped[label].get(r, []), key)
            cell = _fmt(mean, std, n)
            base = _stats(baseline.get(r, []), key)[0]
            if gains and mean is not None and base is not None and label != "baseline":
                cell += f" [{100 * (mean - base):+.1f}]"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(experiment_dir: Path, finals, grouped, human, figures, paper_reference=False) -> str:
    lines = [f"# {experiment_dir.name}: results", ""]
    if finals:
        f0 = finals[0]
        caveats = sorted({f.get("data_caveat") for f in finals if f.get("data_caveat")})
        lines += [f"{len(finals)} finished runs; dataset {f0['dataset']}, {f0['epochs']} epochs. "
                  "Accuracies in %, mean ± sample std over seeds (n = number of seeds).", ""]
        lines += [f"Data caveat: {c}" for c in caveats] + ([""] if caveats else [])
    rates = sorted({r for by_rate in grouped.values() for r in by_rate})
    for key, title in METRICS + (("best_test_accuracy", "best epoch (oracle, for reference only)"),):
        if rates:
            lines += [f"## Clean test accuracy, {title}", ""]
            lines += _method_by_rate_table(grouped, rates, key, gains=True)
            lines += ["", "In brackets: gain over the baseline in points.", ""]
    if paper_reference:
        lines += _paper_comparison(grouped)
    if human:
        types = sorted({t for by_type in human.values() for t in by_type})
        lines += ["## CIFAR-10N (human label noise), mean of last 5 epochs / last epoch / memorized at the last "
                  "epoch (share of the mislabelled training examples predicted as their wrong label)", "",
                  "| method | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
        for label in sorted(human, key=lambda l: (l != "baseline", l)):
            cells = []
            for t in types:
                runs = human[label].get(t, [])
                cells.append(" / ".join(_fmt(*_stats(runs, key))
                                        for key in ("test_accuracy_last5", "test_accuracy", "last_memorized")))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    noisy_rates = [r for r in rates if r > 0]
    if noisy_rates and any(_stats(by_rate.get(r, []), "last_memorized")[2]
                           for by_rate in grouped.values() for r in noisy_rates):
        lines += ["## Memorization at the last epoch (share of corrupted training examples predicted as "
                  "their wrong label, %)", ""]
        lines += _method_by_rate_table(grouped, noisy_rates, "last_memorized", gains=False) + [""]
    wall = [f["wall_seconds"] for f in finals if f.get("wall_seconds")]
    if wall:
        lines += [f"Wall time per run: median {np.median(wall) / 60:.1f} min, max {max(wall) / 60:.1f} min.", ""]
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(lines)


RUN_COLUMNS = ("run", "variant", "method", "noise_type", "noise_rate", "realized_flip_rate", "seed", "epochs",
               "epochs_trained", "selected_epoch", "test_accuracy", "test_accuracy_last5", "best_test_accuracy",
               "last_memorized", "last_corrected", "average_f1", "wall_seconds")


def runs_table(finals) -> list[dict]:
    """One row per run, the scalars of its final.json (absent ones left empty)."""
    return [{column: (variant_label(f) if column == "variant" else f.get(column)) for column in RUN_COLUMNS}
            for f in sorted(finals, key=lambda f: (f["noise_type"], f["noise_rate"], f["method"], f["seed"]))]


def write_report(experiment_dir) -> Path:
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise FileNotFoundError(f"no experiment folder at {experiment_dir}")
    finals = results.load_finals(experiment_dir)
    if any(f.get("per_task_f1") for f in finals):
        raise ValueError(f"{experiment_dir} holds multi-label runs: use python -m experiments.table1 {experiment_dir}")
    synthetic = _group(finals, lambda t: t not in HUMAN_NOISE)
    human = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in finals:
        if f["noise_type"] in HUMAN_NOISE:
            human[variant_label(f)][f["noise_type"]].append(f)
    histories = _histories(finals)
    rate = _pick_rate(synthetic)
    paper_reference = _compares_with_paper([f for f in finals if f["noise_type"] not in HUMAN_NOISE])
    figures = []
    for name, ok in (
        ("accuracy_vs_noise.png", lambda p: plot_accuracy_vs_noise(synthetic, p, paper_reference)),
        ("loss_curves.png", lambda p: plot_loss_curves(synthetic, histories, rate, p)),
        ("memorization.png", lambda p: plot_memorization(synthetic, histories, rate, p)),
        ("robustness.png", lambda p: plot_robustness(synthetic, p)),
    ):
        if ok(experiment_dir / name):
            figures.append(name)
    for noise_type in sorted({t for by_type in human.values() for t in by_type}):  # the same curves per label set
        for name, plot in ((f"loss_curves_{noise_type}.png", plot_loss_curves),
                           (f"memorization_{noise_type}.png", plot_memorization)):
            if plot(human, histories, noise_type, experiment_dir / name):
                figures.append(name)
    results.write_csv(experiment_dir / "runs.csv", runs_table(finals))
    path = experiment_dir / "summary.md"
    summary = summary_markdown(experiment_dir, finals, synthetic, human, figures, paper_reference)
    results.atomic_write_text(path, summary)
    print(f"report: {len(finals)} runs → {path} and {len(figures)} figures", flush=True)
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m experiments.report results/<experiment>", file=sys.stderr)
        return 2
    try:
        write_report(argv[0])
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures and a Markdown summary of an experiment's runs; the README's result tables.

    python -m experiments.report results/cifar10_standard
    python -m experiments.report results/cifar10_standard --readme   # also rewrites its block in README.md
    python -m experiments.report results/cifar10_standard --readme=docs/results.md   # ...in another page

Writes into the experiment folder:

* ``summary.md`` — the tables (:mod:`experiments.tables`): clean test accuracy at the last epoch (the
  selected epoch for early stopping), the gain over the baseline paired by seed, the best epoch (selected on
  the test set, for comparison with published numbers), the peak-to-final drop, memorization in inference
  and training mode, and the BatchNorm train/inference gap;
* ``accuracy_vs_noise.png`` — the paper's Fig. 2: paired gain over the baseline (top) and clean test
  accuracy (bottom) against the noise rate s, at the last epoch and at the best epoch;
* ``loss_curves.png`` — Fig. 1: training loss (noisy labels) and test loss (clean labels) of the baseline
  and of W4/A4, per epoch;
* ``memorization.png`` — per epoch and method: the share of corrupted training examples predicted as their
  wrong label, in inference mode (solid) and training mode (dashed), the share predicted as their true label,
  and the clean test accuracy;
* ``robustness.png`` — Fig. 3, when a method was run with several settings;
* ``runs.csv`` — one row per finished run (its final.json's scalars), for other tools.

Every run is read and checked before anything is written, and the files are written together
(:class:`experiments.outputs.Outputs`): a damaged or malformed run, or a folder without finished runs, is a
one-line ``error:`` and exit status 2; a folder that cannot be written (read-only, full disk) exit status 1;
either way the folder keeps the files it had.

``--readme`` replaces the text between ``<!-- report:begin DIR -->`` and ``<!-- report:end DIR -->`` in
README.md (``--readme=FILE``: in FILE) with :func:`experiments.tables.readme_block` of that folder
(:mod:`experiments.blocks`); ``tests/test_readme.py`` fails when README.md differs from what the committed
files give.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfq_noise import results, stats  # noqa: E402

from . import blocks, tables, validation  # noqa: E402
from .outputs import Outputs, save_figure  # noqa: E402
from .style import method_color  # noqa: E402

PAPER_FIG2 = tables.PAPER_FIG2
FIGURE_METRICS = (("test_accuracy", "last epoch"), ("best_test_accuracy", "best epoch, selected on the test set"))


def _png(fig, path: Path, outputs: Outputs | None = None) -> None:
    """Saves a figure of the report at ``path``, with ``outputs`` when given (renamed into place with the
    report's other files)."""
    save_figure(fig, path, outputs, f"python -m experiments.report {Path(path).parent.as_posix()}")


def _points(final, key):
    value = tables.metric(final, key)
    return None if value is None else 100 * value


def plot_accuracy_vs_noise(grouped, path: Path, paper_reference: bool = False, outputs: Outputs | None = None) -> bool:
    """Fig. 2: gain over the baseline paired by seed (mean ± std of per-seed differences) and accuracy."""
    baseline = grouped.get("baseline")
    labels = tables.ordered(grouped)
    if not labels or len({r for by_rate in grouped.values() for r in by_rate}) < 2:
        return False  # one noise rate: a curve against the rate would be a column of dots
    fig, axes = plt.subplots(2, len(FIGURE_METRICS), figsize=(6.5 * len(FIGURE_METRICS), 8), squeeze=False)
    colors = {label: method_color(label) for label in labels}  # one colour per method, in every figure
    for col, (key, title) in enumerate(FIGURE_METRICS):
        for label in labels:
            rates = sorted(grouped[label])
            summary = [stats.mean_std([_points(f, key) for f in grouped[label][r]]) for r in rates]
            style = dict(marker="o", capsize=3, label=label, color=colors[label],
                         linewidth=2.5 if "quantization" in label else 1.2)
            axes[1, col].errorbar(np.array(rates) * 100, [m for m, _, _ in summary], yerr=[s for _, s, _ in summary],
                                  **style)
            if baseline and label != "baseline":
                shared, gains, spread = [], [], []
                for r in rates:
                    paired = stats.Paired.of(tables.paired(grouped[label].get(r, []), baseline.get(r, []),
                                                           lambda f: _points(f, key)))
                    if paired.n:
                        shared.append(r)
                        gains.append(paired.mean)
                        spread.append(paired.std)
                if shared:
                    axes[0, col].errorbar(np.array(shared) * 100, gains, yerr=spread, **style)
        axes[0, col].axhline(0, color="gray", linewidth=0.8)
        if paper_reference:
            rates = sorted(PAPER_FIG2)
            axes[0, col].plot(
                np.array(rates) * 100, [PAPER_FIG2[r][1] - PAPER_FIG2[r][0] for r in rates], color="black",
                linestyle=":", marker="x", label="paper Fig. 2: W4/A4 − baseline (read off, 200 epochs)")
        axes[0, col].set_title(f"Gain over the baseline, paired by seed ({title})", fontsize=10)
        axes[0, col].set_ylabel("gain (points): mean ± std over seeds")
        axes[1, col].set_title(f"Clean test accuracy ({title})", fontsize=10)
        axes[1, col].set_ylabel("test accuracy (%): mean ± std")
        for ax, span in zip(axes[:, col], (4.0, 10.0)):
            ax.set_xlabel("training labels re-drawn at random, s (%)")
            ax.grid(alpha=0.3)
            _min_span(ax, span)
    for row in (0, 1):  # one legend per row, beside the last panel
        if axes[row, -1].get_legend_handles_labels()[0]:
            axes[row, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.subplots_adjust(hspace=0.35)
    _png(fig, path, outputs)
    return True


def _pick_rate(grouped, wanted=0.4):
    rates = sorted({r for by_rate in grouped.values() for r in by_rate})
    if not rates:
        return None
    return wanted if wanted in rates else max(rates)


def _setting_text(setting) -> str:
    """A noise setting for a title: a rate of synthetic noise, or a CIFAR-10N label set by name."""
    return f"CIFAR-10N {setting}" if isinstance(setting, str) else tables.rate_name(setting)


def _first_seed(runs):
    return min(runs, key=lambda f: f["seed"]) if runs else None


def _min_span(ax, span: float) -> None:
    """Widens the y-axis to at least ``span`` (so runs that barely differ are not zoomed into noise)."""
    low, high = ax.get_ylim()
    if high - low < span:
        middle = (low + high) / 2
        ax.set_ylim(middle - span / 2, middle + span / 2)


def _integer_epochs(ax) -> None:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def plot_loss_curves(grouped, histories, rate, path: Path, outputs: Outputs | None = None) -> bool:
    pairs = [(l, method_color(l)) for l in ("baseline", "quantization W4/A4") if l in grouped]
    if rate is None or not any(grouped[l].get(rate) for l, _ in pairs):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    later = []  # values after the first epoch, whose test loss can be off the chart
    for label, color in pairs:
        run = _first_seed(grouped[label].get(rate, []))
        if run is None:
            continue
        h = histories[run["run_dir"]]
        epochs = [r["epoch"] + 1 for r in h]
        ax.plot(epochs, [r["loss"] for r in h], color=color, linestyle="--",
                label=f"{label}: train (noisy labels), seed {run['seed']}")
        later += [r["loss"] for r in h[1:]]
        if all("test_loss" in r for r in h):
            ax.plot(epochs, [r["test_loss"] for r in h], color=color, label=f"{label}: test (clean labels)")
            later += [r["test_loss"] for r in h[1:]]
    if later:
        ax.set_ylim(0, 1.15 * max(later))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"Training and test loss, {_setting_text(rate)}")
    _min_span(ax, 0.5)
    _integer_epochs(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _png(fig, path, outputs)
    return True


def plot_memorization(grouped, histories, rate, path: Path, num_classes: int = 10,
                      outputs: Outputs | None = None) -> bool:
    labels = [l for l in tables.ordered(grouped) if grouped[l].get(rate)]
    if rate is None or not labels:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    training_mode = selected = False
    for label in labels:
        final = _first_seed(grouped[label][rate])
        h = histories[final["run_dir"]]
        epochs = [r["epoch"] + 1 for r in h]
        style = dict(linewidth=2.5 if "quantization" in label else 1.2, color=method_color(label))
        # a run that keeps an earlier epoch's model (early stopping): a star there, as its curve may lie
        # under the baseline's (same schedule and seed until it stops)
        kept = [r for r in h[:-1] if r["epoch"] == final.get("selected_epoch")]
        for ax, key in zip(axes, ("memorized", "corrected", "test_accuracy")):
            if all(key in r for r in h):
                ax.plot(epochs, [100 * r[key] for r in h], label=label, **style)
                if kept:
                    ax.plot(kept[0]["epoch"] + 1, 100 * kept[0][key], "*", ms=11, mec="k", mew=0.5,
                            color=style["color"])
                    selected = True
        if h and all(r.get("trainmode_memorized") is not None for r in h):
            axes[0].plot(epochs, [100 * r["trainmode_memorized"] for r in h], linestyle="--", **style)
            training_mode = True
    axes[0].axhline(100 / num_classes, color="gray", linestyle=":", label=f"random prediction ({100 / num_classes:.3g}%)")
    if training_mode:
        axes[0].plot([], [], color="gray", linestyle="--", label="training mode (dashed)")
    if selected:
        axes[0].plot([], [], "*", color="gray", ms=9, linestyle="none", label="epoch whose model is kept")
    titles = ("Corrupted examples predicted as their wrong label", "Corrupted examples predicted as their true label",
              "Clean test accuracy")
    for ax, title in zip(axes, titles):
        ax.set_title(f"{title} ({_setting_text(rate)})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        _min_span(ax, 10.0)
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _png(fig, path, outputs)
    return True


def robustness_families(grouped) -> dict[str, tuple[str, list[str]]]:
    """{method: (reference setting, its settings)} for every method run with several settings (Fig. 3). The
    reference is the default setting, else the one that changes the fewest defaults (e.g. the standard
    protocol's ``pruning (prune_criterion=bn_gamma)``); runs in another precision are not a setting."""
    families = collections.defaultdict(list)
    for label in grouped:
        if "[" not in label:
            families[label.split(" ")[0]].append(label)
    return {m: (min(ls, key=lambda l: (not tables.is_default_variant(l), l.count("="), l)), sorted(ls))
            for m, ls in families.items() if len(ls) > 1}


def _change_text(label: str, reference: str, method: str) -> str:
    """What a setting changes against the reference: 'W8/A8', 'prune_ratio=0.25', 'W4/A4 (reference)'."""
    def changes(l):
        return [x for x in (l[l.find("(") + 1:l.rfind(")")] if "(" in l else "").split(", ") if x]

    head = label.split(" (")[0].replace(method, "", 1).strip()
    text = ", ".join([head] * bool(head) + [x for x in changes(label) if x not in changes(reference)])
    return (f"{text} (reference)" if text else "reference") if label == reference else text


def plot_robustness(grouped, path: Path, outputs: Outputs | None = None) -> bool:
    """Each setting of a method against the method's reference setting (Fig. 3), paired by seed: against s
    where the settings ran at several rates, else one bar per setting at the one rate."""
    families = robustness_families(grouped)
    if not families:
        return False
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), squeeze=False, layout="constrained")
    for ax, (method, (reference, labels)) in zip(axes[0], sorted(families.items())):
        common = {label: sorted(r for r in grouped[label] if r in grouped[reference]) for label in labels}
        gains = {label: [stats.Paired.of(tables.paired(grouped[label][r], grouped[reference][r],
                                                       lambda f: _points(f, "test_accuracy"))).mean for r in rates]
                 for label, rates in common.items()}
        rates = sorted({r for rs in common.values() for r in rs})
        ax.set_title(f"{method}: gain over {reference}", fontsize=10)
        ax.grid(alpha=0.3)
        if len(rates) > 1:  # the paper's layout: gain against s, one line per setting
            for label in labels:
                ax.plot(np.array(common[label]) * 100, gains[label], marker="o", label=label)
            ax.axhline(0, color="gray", linewidth=0.8)
            ax.set_xlabel("s (%)")
            ax.set_ylabel("gain at the last epoch (points), paired by seed")
            ax.legend(fontsize=7)
            continue
        shown = [label for label in labels if gains[label]]  # one rate: one bar per setting
        ax.barh(range(len(shown)), [gains[label][0] for label in shown],
                color=["0.6" if label == reference else "tab:blue" for label in shown])
        ax.set_yticks(range(len(shown)), [_change_text(label, reference, method) for label in shown], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="gray", linewidth=0.8)
        ax.set_xlabel(f"gain at the last epoch at {tables.rate_name(rates[0]) if rates else '?'} (points), "
                      "paired by seed")
    _png(fig, path, outputs)
    return True


def _histories(finals) -> dict[str, list[dict]]:
    """Each run's history.csv, checked: the figures need a number for ``epoch`` and ``loss`` on every row."""
    histories, bad = {}, []
    for f in finals:
        path = Path(f["run_dir"]) / results.HISTORY
        rows = results.read_csv(path)
        wrong = sorted({key for row in rows for key in ("epoch", "loss")
                        if not isinstance(row.get(key), (int, float)) or isinstance(row.get(key), bool)})
        if wrong:
            bad.append(f"{path}: {', '.join(repr(k) for k in wrong)} must be a number on every row")
        histories[f["run_dir"]] = rows
    if bad:
        raise validation.BadRun("not a finished run's history (re-run it with python -m experiments.run, or remove "
                            "it): " + "; ".join(bad))
    return histories


def write_report(experiment_dir) -> Path:
    """Writes the figures, ``runs.csv`` and ``summary.md``, all or none; returns the summary's path.

    Raises FileNotFoundError, :class:`~tfq_noise.results.DamagedFile`, :class:`~experiments.validation.BadRun` or
    :class:`~experiments.validation.NoRuns` (bad input: nothing written) and
    :class:`~experiments.outputs.CannotWrite` (the folder keeps the files it had)."""
    experiment_dir = Path(experiment_dir)
    report = tables.ExperimentTables.load(experiment_dir)  # reads and checks every run before writing
    validation.check_runs(report.finals, protocol=True)  # the summary's protocol line reads config.json
    histories = _histories(report.finals)
    for leftover in experiment_dir.glob(f"{results.TEMP_PREFIX}*"):  # of a report killed mid-write
        try:
            leftover.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the first write below says so
    synthetic, human = report.synthetic, report.human
    rate = _pick_rate(synthetic)
    named = {float(r): r for r in report.rates}  # a rate that names its column (labels as given) names the figure
    rate = named.get(rate, rate)
    num_classes = report.num_classes or tables.NUM_CLASSES
    figures = []
    path = experiment_dir / "summary.md"
    with Outputs() as out:
        for name, ok in (
            ("accuracy_vs_noise.png", lambda p: plot_accuracy_vs_noise(synthetic, p, report.paper_reference, out)),
            ("loss_curves.png", lambda p: plot_loss_curves(synthetic, histories, rate, p, out)),
            ("memorization.png", lambda p: plot_memorization(synthetic, histories, rate, p, num_classes, out)),
            ("robustness.png", lambda p: plot_robustness(synthetic, p, out)),
        ):
            if ok(experiment_dir / name):
                figures.append(name)
        for noise_type in sorted({t for by_type in human.values() for t in by_type}):  # the same curves per label set
            for name, plot in ((f"loss_curves_{noise_type}.png", lambda *a: plot_loss_curves(*a, outputs=out)),
                               (f"memorization_{noise_type}.png",
                                lambda *a: plot_memorization(*a, num_classes=num_classes, outputs=out))):
                if plot(human, histories, noise_type, experiment_dir / name):
                    figures.append(name)
        out.write(experiment_dir / "runs.csv", lambda tmp: results.write_csv(tmp, tables.runs_table(report.finals)))
        out.text(path, report.summary_markdown(figures))
    print(f"report: {len(report.finals)} runs → {path} and {len(figures)} figures", flush=True)
    return path


def main(argv=None) -> int:
    return blocks.folder_command(argv, "python -m experiments.report", __doc__.split("\n\n")[0], "report",
                                 write_report, tables.readme_block, "results/cifar10_standard")


if __name__ == "__main__":
    sys.exit(main())

"""Which remedy to pick: every method of an experiment with its accuracy and its cost, side by side.

    python -m experiments.remedies results/recipe_search/recipe_n20k_e20_none
    python -m experiments.remedies results/recipe_search/recipe_n20k_e20_none --readme

For each noise setting (a synthetic rate or a CIFAR-10N label set), one row per method variant:

* clean test accuracy (last epoch; early stopping: its selected epoch), mean ± sample std over seeds;
* the paired difference with the float baseline, with W4/A4 QAT and with the setting's leader (same seeds:
  same images, same noise draw), and how many seeds gain. The leader is the remedy (neither baseline nor
  W4/A4 alone, at any training precision) with the best mean accuracy among those run on at least two
  seeds (on one seed when none is): the column ranks the contenders against it on the seeds they share;
* memorization at the end (inference mode);
* the cost: the trainings a run makes (confident learning: its K fold models and the final one), the images
  it processes in training, counted in baseline trainings (epochs actually trained × training images, summed
  over its trainings, over the baseline's), and the minutes its epochs took (``epoch_seconds`` of its
  ``history.csv``, folds included).

The image count is the machine-independent cost: one ResNet20 training step of W4/A4 costs 1.01× a float
step (docs/speed.md), and the other methods change the loss or the data, not the network. Minutes are
what this machine measured and vary with whatever shared it.

Writes ``remedies.md`` and ``remedies.png`` (accuracy against cost, one panel per setting) into the
experiment folder; ``--readme`` rewrites the README block ``<!-- remedies:begin DIR -->`` with the tables
(``--readme=FILE``: the block of another page; ``tests/test_readme.py`` fails when it differs from the
committed runs).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfq_noise import results, stats  # noqa: E402

from . import blocks, tables  # noqa: E402
from .outputs import Outputs, save_figure  # noqa: E402
from .style import method_color  # noqa: E402

REFERENCES = ("baseline", "quantization W4/A4")
LEADER_SEEDS = 2  # a leader is chosen among the remedies with at least this many seeds, when there are any
FIGURE = "remedies.png"
SUMMARY = "remedies.md"


@dataclasses.dataclass(frozen=True)
class Cost:
    """What one run cost: its trainings (the run and its fold runs), images processed, minutes of epochs."""

    trainings: int
    images: float
    minutes: float | None


def _trainings_of(run_dir: Path) -> list[Path]:
    folds = run_dir / results.FOLDS
    extra = sorted(p.parent for p in folds.glob(f"*/{results.FINAL}")) if folds.is_dir() else []
    return [run_dir, *extra]


def run_cost(final: Mapping) -> Cost:
    """The cost of a finished run from its files (fold runs under ``folds/`` included).

    Raises ValueError when a training's size or epochs cannot be read (a run that predates provenance.json).
    """
    run_dir = Path(final["run_dir"])
    images, seconds, timed = 0.0, 0.0, True
    trainings_dirs = _trainings_of(run_dir)
    for directory in trainings_dirs:
        sub = final if directory == run_dir else results.read_json(directory / results.FINAL)
        history = results.read_csv(directory / results.HISTORY)
        epochs = sub.get("epochs_trained") or len(history)
        examples = tables.train_examples({"run_dir": str(directory)})
        if not examples or not epochs:
            raise ValueError(f"{directory}: no training-set size (provenance.json) or no epochs: cannot count its cost")
        images += float(epochs) * examples
        times = [row.get("epoch_seconds") for row in history]
        if any(t is None or not math.isfinite(t) for t in times):
            timed = False
        else:
            seconds += sum(times)
    trainings = len(trainings_dirs)
    declared = final.get("trainings")
    if declared is not None and declared != trainings:  # e.g. a fold run deleted after the fact
        raise ValueError(f"{run_dir}: final.json says {declared} trainings, the folder holds {trainings}")
    return Cost(trainings, images, seconds / 60 if timed else None)


def _settings(report: tables.ExperimentTables) -> list[tuple[str, dict]]:
    """[(setting name, {variant: [final]})] for every synthetic rate and CIFAR-10N label set."""
    settings = [(tables.rate_name(rate), {label: by_rate[rate] for label, by_rate in report.synthetic.items()
                                          if by_rate.get(rate)}) for rate in report.rates]
    for noise_type in tables.HUMAN_NOISE:
        grouped = {label: by_type[noise_type] for label, by_type in report.human.items() if by_type.get(noise_type)}
        if grouped:
            settings.append((f"CIFAR-10N {noise_type}", grouped))
    return settings


@dataclasses.dataclass
class Row:
    label: str
    accuracy: tuple[float, float, int]  # %, mean, sample std, n
    versus: dict  # reference label -> stats.Paired (points)
    memorized: float | None  # %, mean
    trainings: int
    cost: float  # images processed, in baseline trainings (mean over seeds), or in images if no baseline
    minutes: float | None  # median over seeds
    filtered: bool = False  # trained on a filtered subset: memorized counts the corrupted examples it kept
    leader: bool = False  # the setting's leader: the other rows' "vs leader" differences are against it


def leader_of(rows: Sequence[Row]) -> Row | None:
    """The remedy with the best mean accuracy among those with at least LEADER_SEEDS seeds (among all remedies
    when none has that many); baseline and W4/A4 alone, at any training precision, are references, not
    contenders. None: no remedy."""
    contenders = [r for r in rows if r.label.split(" [")[0] not in REFERENCES]  # "baseline [bf16]" included
    seeded = [r for r in contenders if r.accuracy[2] >= LEADER_SEEDS] or contenders
    return max(seeded, key=lambda r: r.accuracy[0], default=None)


def _accuracy(final):
    return 100 * final["test_accuracy"]


def setting_rows(grouped: Mapping[str, Sequence[Mapping]]) -> tuple[list[Row], bool, list[float]]:
    """The rows of one setting, baseline first, then by mean accuracy (best first); whether costs are in
    baseline trainings (False: no baseline, costs in images); and each run's minutes per baseline training."""
    costs = {label: [run_cost(f) for f in runs] for label, runs in grouped.items()}
    base_images = [c.images for c in costs.get("baseline", [])]
    unit = tables.median(base_images) if base_images else None
    pace = [c.minutes * unit / c.images for cs in costs.values() for c in cs if unit and c.minutes is not None]
    rows = []
    for label, runs in grouped.items():
        versus = {ref: stats.Paired.of(tables.paired(runs, grouped[ref], _accuracy))
                  for ref in REFERENCES if ref in grouped and ref != label}
        memorized = stats.mean_std([None if f.get("last_memorized") is None else 100 * f["last_memorized"]
                                    for f in runs])
        minutes = [c.minutes for c in costs[label] if c.minutes is not None]
        images = stats.mean_std([c.images for c in costs[label]])[0]
        rows.append(Row(label, stats.mean_std([_accuracy(f) for f in runs]), versus,
                        memorized[0] if memorized[2] else None, max(c.trainings for c in costs[label]),
                        images / unit if unit else images, tables.median(minutes) if minutes else None,
                        tables.filtered(runs)))
    rows.sort(key=lambda r: (r.label != "baseline", -r.accuracy[0]))
    leader = leader_of(rows)
    if leader is not None:
        leader.leader = True
        for r in rows:
            if r is not leader:
                r.versus["leader"] = stats.Paired.of(tables.paired(grouped[r.label], grouped[leader.label], _accuracy))
    return rows, unit is not None, pace


def setting_table(rows: Sequence[Row], relative: bool) -> list[str]:
    cost = "images processed, in baseline trainings" if relative else "images processed"
    leader = next((r.label for r in rows if r.leader), None)
    lines = [f"Leader: `{leader}`." if leader else "No remedy beside the references: no leader.", "",
             "| method | clean accuracy, % | vs baseline, points | vs W4/A4, points | vs leader, points | "
             f"memorized, % | trainings | {cost} | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        versus = [r.versus[ref].text() if ref in r.versus else "—" for ref in (*REFERENCES, "leader")]
        versus[2] = "leader" if r.leader else versus[2]
        cost_text = f"{r.cost:.2f}" if relative else f"{r.cost:,.0f}"
        memorized = "—" if r.memorized is None else f"{r.memorized:.0f}"
        memorized += tables.FILTERED_MARK if r.filtered else ""
        lines.append(f"| {r.label} | {tables.mean_text(r.accuracy)} | {' | '.join(versus)} | {memorized} | "
                     f"{r.trainings} | {cost_text} | {'—' if r.minutes is None else f'{r.minutes:.0f}'} |")
    return lines


NOTE = ("Accuracy: clean test accuracy at the last epoch (early stopping: its selected epoch), mean ± sample std "
        "over seeds. Paired differences: mean ± sample std of the per-seed differences and how many seeds gain "
        "(one seed: its difference). Leader: the remedy (neither the baseline nor W4/A4 alone, at any training "
        f"precision) with the best mean accuracy among those run on at least {LEADER_SEEDS} seeds (on one seed "
        "when none is); its column pairs every other method with it on the seeds both hold. Memorized: % of the "
        "corrupted training examples predicted as their wrong label at the end, inference mode. Images processed: "
        "epochs trained × training images, summed over a run's trainings, mean over seeds (a W4/A4 step costs "
        "about a float step: docs/speed.md). Minutes: its epochs' times summed (folds included), median over "
        "seeds, as measured on whatever machine ran it.")


def summarize(report: tables.ExperimentTables) -> list[tuple]:
    """[(setting name, rows, relative, paces)] for every setting: each run's files read once."""
    return [(name, *setting_rows(grouped)) for name, grouped in _settings(report)]


def markdown(summary: Sequence[tuple]) -> list[str]:
    lines, pace, note = [], [], NOTE
    for name, rows, relative, paces in summary:
        lines += [f"#### {name}", ""] + setting_table(rows, relative) + [""]
        pace += paces
    if not lines:
        return ["No finished runs."]
    if any(r.filtered for _, rows, _, _ in summary for r in rows):
        note += " " + tables.FILTERED_NOTE
    if len(pace) > 1:
        return lines + [note + f" Here one baseline training's worth of images took {min(pace):.0f} to "
                        f"{max(pace):.0f} minutes across the {len(pace)} runs (machines and their sharing differed): "
                        "compare the methods' cost on images processed, not on minutes."]
    return lines + [note]


def readme_block(directory, name: str | None = None, page: str = blocks.README) -> str:
    report = tables.ExperimentTables.load(directory)
    return "\n".join([f"Generated by `python -m experiments.remedies {name or Path(directory).as_posix()} "
                      f"{blocks.readme_option(page)}` from {len(report.finals)} committed runs.", ""]
                     + markdown(summarize(report))) + "\n"


def plot(summary: Sequence[tuple], path: Path, outputs: Outputs | None = None) -> bool:
    settings = [(name, rows, relative) for name, rows, relative, _ in summary if len(rows) > 1]
    if not settings:
        return False
    columns = min(2, len(settings))
    grid_rows = math.ceil(len(settings) / columns)
    fig, axes = plt.subplots(grid_rows, columns, figsize=(8.5 * columns, 5.6 * grid_rows), squeeze=False)
    for ax in axes.flat[len(settings):]:
        ax.set_visible(False)
    for ax, (name, rows, relative) in zip(axes.flat, settings):
        low, high = min(r.cost for r in rows), max(r.cost for r in rows)
        for r in rows:
            mean, std, n = r.accuracy
            ax.errorbar(r.cost, mean, yerr=std if n > 1 else None, fmt="s" if "quantization" in r.label else "o",
                        color=method_color(r.label), capsize=3, markersize=7)
            if r.label == "baseline":
                ax.axhline(mean, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(low / 1.5, high * 8)
        span = max(r.accuracy[0] for r in rows) - min(r.accuracy[0] for r in rows)
        ax.set_ylim(min(r.accuracy[0] for r in rows) - 0.1 * span - 1,
                    max(r.accuracy[0] for r in rows) + 0.1 * span + 1)
        gap, text_y = 0.075 * (ax.get_ylim()[1] - ax.get_ylim()[0]), -math.inf
        for r in sorted(rows, key=lambda r: r.accuracy[0]):  # labels to the right, spread so none overlap
            text_y = max(r.accuracy[0], text_y + gap)
            if text_y + gap > ax.get_ylim()[1]:  # the stack of labels stays inside the panel
                ax.set_ylim(ax.get_ylim()[0], text_y + gap)
            ax.annotate(f"{r.label} (n={r.accuracy[2]})", (r.cost, r.accuracy[0]), xytext=(high * 1.5, text_y),
                        fontsize=9, va="center", color=method_color(r.label),
                        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.6"})
        ticks = [t for t in (0.25, 0.5, 1, 2, 5, 10, 20) if low / 1.5 <= t <= high * 8]
        if relative and ticks:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("images processed in training, in baseline trainings (log)" if relative else
                      "images processed in training (log)")
        ax.set_ylabel("clean test accuracy, %", fontsize=11)
        ax.set_title(name, fontsize=12)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against training cost (square: with W4/A4 QAT; bars: sample std over seeds)")
    save_figure(fig, path, outputs, f"python -m experiments.remedies {Path(path).parent.as_posix()}")
    return True


def write(experiment_dir) -> Path:
    """Writes ``remedies.md`` and ``remedies.png`` into the experiment folder, both or neither; returns the
    summary's path."""
    directory = Path(experiment_dir)
    report = tables.ExperimentTables.load(directory)
    summary = summarize(report)
    path = directory / SUMMARY
    with Outputs() as out:
        drawn = plot(summary, directory / FIGURE, out)
        out.write(path, lambda tmp: results.write_markdown(tmp, "Remedies: accuracy and cost", markdown(summary),
                                                           FIGURE if drawn else None, "accuracy against cost"))
    print(f"remedies: {len(report.finals)} runs → {path}", flush=True)
    return path


def main(argv=None) -> int:
    return blocks.folder_command(argv, "python -m experiments.remedies", __doc__.split("\n\n")[0], "remedies", write,
                                 readme_block, "results/recipe_search/recipe_n20k_e20_none")


if __name__ == "__main__":
    sys.exit(main())

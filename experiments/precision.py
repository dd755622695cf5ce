"""Is bfloat16 harmless? Every run in another precision against its float32 twin.

    python -m experiments.precision results/recipe_search/recipe_n20k_e20_none
    python -m experiments.precision results/recipe_search/recipe_n20k_e20_none --readme

Twins share the method, the noise setting and the seed: the same images, the same noise draw, the same
initial weights (``--precision=mixed_bfloat16`` only changes the compute type; the variables stay float32).
For every (method variant, noise setting) with runs in both precisions:

* clean test accuracy at the last epoch (early stopping: its selected epoch) in each precision, mean ± sample
  std over seeds (float32: all its seeds);
* the per-seed differences (other − float32): mean ± sample std and how many seeds gain;
* the float32 seed spread: the sample std of the float32 runs' accuracy over all their seeds;
* memorization at the end (inference mode) and the BatchNorm train/inference-mode gap in each;
* seconds per epoch, median over seeds, in each, with the CPU that ran it; their ratio only where both ran on
  the same CPU model (``python -m experiments.bench_train --mixed_bfloat16`` measures the speed in one run).

The other tables show these runs as rows of their own ("baseline [bf16]"), paired with the float32 baseline.

The rule (docs/results/protocol_20k.md, "bf16 only if it is harmless"): the other precision is harmless on a setting when the mean
per-seed difference lies within the float32 seed spread, |mean| ≤ sample std. The verdict adopts it for the
grid only when it is harmless on every setting measured and baseline and W4/A4 at s = 0 and 40% each have
at least two paired seeds.

Writes ``precision.md`` and ``precision.png`` into the experiment folder; ``--readme`` rewrites the README
block ``<!-- precision:begin DIR -->`` (``--readme=FILE``: that of another page; ``tests/test_readme.py``
fails when it differs from the runs).
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfq_noise import results, stats  # noqa: E402

from . import blocks, tables  # noqa: E402
from .outputs import Outputs, save_figure  # noqa: E402

REFERENCE = "float32"
# Baseline and W4/A4 at s = 0 and 40%: the settings the verdict needs, each with MIN_SEEDS paired seeds.
REQUIRED = (("baseline", 0.0), ("quantization W4/A4", 0.0), ("baseline", 0.4), ("quantization W4/A4", 0.4))
MIN_SEEDS = 2
FIGURE = "precision.png"
SUMMARY = "precision.md"


def _setting(final) -> tuple[str, float]:
    return final["noise_type"], float(final["noise_rate"])


def _setting_name(setting) -> str:
    noise_type, rate = setting
    return tables.rate_name(rate) if noise_type not in tables.HUMAN_NOISE else f"CIFAR-10N {noise_type}"


def _accuracy(final) -> float:
    return 100 * final["test_accuracy"]


def _percent(final, key):
    value = tables.metric(final, key)
    return None if value is None else 100 * value


def _epoch_seconds(final) -> float | None:
    times = [row.get("epoch_seconds") for row in results.read_csv(Path(final["run_dir"]) / results.HISTORY)]
    times = [t for t in times if isinstance(t, (int, float))]
    return tables.median(times) if times else None


def _cpu(final) -> str:
    path = Path(final["run_dir"]) / results.PROVENANCE
    cpu = results.read_json(path).get("machine", {}).get("cpu") if path.exists() else None
    return cpu or "?"


@dataclasses.dataclass
class Side:
    """One precision's runs of a comparison."""

    accuracy: tuple[float, float, int]
    memorized: tuple[float, float, int]
    mode_gap: tuple[float, float, int]
    seconds: float | None  # per epoch, median over runs
    cpus: tuple[str, ...]

    @classmethod
    def of(cls, runs: Sequence[Mapping]) -> "Side":
        seconds = [s for s in (_epoch_seconds(f) for f in runs) if s is not None]
        return cls(stats.mean_std([_accuracy(f) for f in runs]),
                   stats.mean_std([_percent(f, "last_memorized") for f in runs]),
                   stats.mean_std([_percent(f, "last_mode_gap") for f in runs]),
                   tables.median(seconds) if seconds else None, tuple(sorted({_cpu(f) for f in runs})))


@dataclasses.dataclass
class Comparison:
    label: str
    setting: tuple[str, float]
    precision: str
    reference: Side
    other: Side
    difference: stats.Paired  # other − float32, per seed, points
    pairs: dict  # seed -> (float32 accuracy, other accuracy), %

    @property
    def spread(self) -> float:
        """The float32 runs' seed spread (sample std of their accuracy, points); NaN under two seeds."""
        return self.reference.accuracy[1] if self.reference.accuracy[2] > 1 else float("nan")

    @property
    def harmless(self) -> bool | None:
        """|mean difference| ≤ the float32 seed spread; None until MIN_SEEDS seeds are paired and the spread is
        known (two float32 seeds)."""
        if self.difference.n < MIN_SEEDS or self.reference.accuracy[2] < 2:
            return None
        return abs(self.difference.mean) <= self.spread

    @property
    def speed_ratio(self) -> float | None:
        """Seconds per epoch, other / float32, when both ran on one CPU model; else None."""
        if (self.reference.seconds and self.other.seconds and len(self.reference.cpus) == 1
                and self.reference.cpus == self.other.cpus):
            return self.other.seconds / self.reference.seconds
        return None


def compare(report: tables.ExperimentTables) -> list[Comparison]:
    """One comparison per (variant, setting, other precision) that has a float32 twin."""
    reference, others = collections.defaultdict(list), collections.defaultdict(list)
    for f in report.finals:
        label = tables.variant_label({**f, "precision": REFERENCE})  # the twins' common label
        if f["precision"] == REFERENCE:
            reference[(label, _setting(f))].append(f)
        else:
            others[(label, _setting(f), f["precision"])].append(f)
    comparisons = []
    for (label, setting, precision), runs in sorted(others.items(), key=lambda kv: (kv[0][1], kv[0][0] != "baseline",
                                                                                     kv[0][0], kv[0][2])):
        twins = reference.get((label, setting), [])
        if not twins:
            continue
        by_seed = {f["seed"]: _accuracy(f) for f in twins}
        pairs = {f["seed"]: (by_seed[f["seed"]], _accuracy(f)) for f in runs if f["seed"] in by_seed}
        comparisons.append(Comparison(label, setting, precision, Side.of(twins), Side.of(runs),
                                      stats.Paired.of({s: b - a for s, (a, b) in pairs.items()}), pairs))
    return comparisons


def verdict(comparisons: Sequence[Comparison]) -> str:
    if not comparisons:
        return "No run in another precision has a float32 twin yet: nothing to judge."
    precision = comparisons[0].precision
    harmful = [c for c in comparisons if c.harmless is False]
    if harmful:
        where = "; ".join(f"{c.label} at {_setting_name(c.setting)} ({c.difference.text()} points against a spread "
                          f"of {c.spread:.1f})" for c in harmful)
        return f"Verdict: {precision} is not harmless: outside the float32 seed spread for {where}. The grid keeps float32."
    done = {(c.label, c.setting[1]) for c in comparisons if c.setting[0] == "symmetric" and c.harmless}
    missing = [f"{label} at {tables.rate_name(rate)}" for label, rate in REQUIRED if (label, rate) not in done]
    if missing:
        judged = ("is within the float32 seed spread wherever judged" if any(c.harmless for c in comparisons)
                  else "is not judged anywhere yet")
        return (f"Verdict pending: {precision} {judged}, but the rule needs "
                f"{MIN_SEEDS} paired seeds and a known spread for: {', '.join(missing)}. The grid keeps float32.")
    return (f"Verdict: {precision} is harmless: within the float32 seed spread on all {len(comparisons)} settings "
            "measured; the grid may adopt it.")


def _seconds_text(side: Side) -> str:
    return "—" if side.seconds is None else f"{side.seconds:.0f} ({', '.join(side.cpus)})"


def markdown(comparisons: Sequence[Comparison]) -> list[str]:
    if not comparisons:
        return [verdict(comparisons)]
    precision = comparisons[0].precision if len({c.precision for c in comparisons}) == 1 else "other"
    lines = [f"| method | setting | float32, % | {precision}, % | difference, points | float32 seed spread | "
             f"harmless | memorized, % (float32 / {precision}) | BN gap, points (float32 / {precision}) | "
             f"s per epoch, float32 | s per epoch, {precision} | speed ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        ratio = "—" if c.speed_ratio is None else f"{c.speed_ratio:.2f}×"
        harmless = {True: "yes", False: "no", None: "—"}[c.harmless]
        spread = "—" if c.reference.accuracy[2] < 2 else f"{c.spread:.1f}"
        memorized = " / ".join("—" if s.memorized[2] == 0 else f"{s.memorized[0]:.0f}" for s in (c.reference, c.other))
        gap = " / ".join("—" if s.mode_gap[2] == 0 else f"{s.mode_gap[0]:+.1f}" for s in (c.reference, c.other))
        lines.append(f"| {c.label} | {_setting_name(c.setting)} | {tables.mean_text(c.reference.accuracy)} | "
                     f"{tables.mean_text(c.other.accuracy)} | {c.difference.text()} | {spread} | {harmless} | "
                     f"{memorized} | {gap} | {_seconds_text(c.reference)} | {_seconds_text(c.other)} | {ratio} |")
    return lines + ["", "Accuracy: clean test accuracy at the last epoch, mean ± sample std over seeds (float32: all "
                    "its seeds). Difference: per seed (same images, noise draw and initial weights), other − float32, "
                    "mean ± sample std and how many seeds gain. Harmless: |mean difference| ≤ the float32 seed "
                    f"spread, judged once {MIN_SEEDS} seeds are paired. Seconds per epoch: median over seeds, with the "
                    "CPU that ran them; a ratio only where both precisions ran on one CPU model.", "",
                    verdict(comparisons)]


def readme_block(directory, name: str | None = None, page: str = blocks.README) -> str:
    report = tables.ExperimentTables.load(directory)
    comparisons = compare(report)
    runs = sum(c.other.accuracy[2] for c in comparisons)
    return "\n".join([f"Generated by `python -m experiments.precision {name or Path(directory).as_posix()} "
                      f"{blocks.readme_option(page)}` from {runs} committed runs and their float32 twins.", ""]
                     + markdown(comparisons)) + "\n"


def plot(comparisons: Sequence[Comparison], path: Path, outputs: Outputs | None = None) -> bool:
    """The rule as a picture: per comparison, each seed's difference (other − float32) and their mean, over a
    grey band of ± the float32 seed spread: a mean inside the band is harmless."""
    if not comparisons:
        return False
    fig, ax = plt.subplots(figsize=(max(6.4, 1.4 * len(comparisons)), 4.4))
    seen = set()
    for i, c in enumerate(comparisons):
        if c.reference.accuracy[2] > 1:
            ax.add_patch(plt.Rectangle((i - 0.3, -c.spread), 0.6, 2 * c.spread, color="0.85", lw=0))
        for seed, (a, b) in sorted(c.pairs.items()):
            ax.plot(i + 0.08 * (seed - 1), b - a, "o", color=f"C{seed % 10}", ms=5,
                    label=None if seed in seen else f"seed {seed}")
            seen.add(seed)
        if c.difference.n:
            color = {True: "k", False: "tab:red", None: "0.5"}[c.harmless]
            ax.plot([i - 0.25, i + 0.25], [c.difference.mean] * 2, "-", color=color, lw=2)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(comparisons)), [f"{c.label}\n{_setting_name(c.setting)}" for c in comparisons], fontsize=8)
    ax.set_xlim(-0.6, len(comparisons) - 0.4)
    ax.set_ylabel(f"clean test accuracy:\n{comparisons[0].precision} − float32, points")
    ax.set_title("Twins paired by seed (dots), their mean (bar; red: outside), the float32 seed spread (grey)",
                 fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save_figure(fig, path, outputs, f"python -m experiments.precision {Path(path).parent.as_posix()}")
    return True


def write(experiment_dir) -> Path:
    """Writes ``precision.md`` and ``precision.png`` into the experiment folder, both or neither; returns the
    summary's path."""
    directory = Path(experiment_dir)
    comparisons = compare(tables.ExperimentTables.load(directory))
    path = directory / SUMMARY
    with Outputs() as out:
        drawn = plot(comparisons, directory / FIGURE, out)
        out.write(path, lambda tmp: results.write_markdown(tmp, "float32 against mixed_bfloat16", markdown(comparisons),
                                                           FIGURE if drawn else None, "bfloat16 minus float32, per seed"))
    print(f"precision: {len(comparisons)} comparisons → {path}", flush=True)
    return path


def main(argv=None) -> int:
    return blocks.folder_command(argv, "python -m experiments.precision", __doc__.split("\n\n")[0], "precision",
                                 write, readme_block, "results/recipe_search/recipe_n20k_e20_none")


if __name__ == "__main__":
    sys.exit(main())

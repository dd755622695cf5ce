"""The tables of an experiment's report, from its runs' ``final.json`` files: one place for every figure
the report, the README and the recipe search print.

Conventions (the evidence protocol):

* the primary figure is clean test accuracy at the last epoch, or at the selected epoch for a method that
  selects one (early stopping); no statistic averages epochs a method discards;
* a gain over the baseline is paired by seed (same images, same noise draw, same validation split):
  mean ± sample std of the per-seed differences and how many seeds gain (:mod:`tfq_noise.stats`);
* the best epoch is selected on the test set: optimistic, shown only for comparison with published numbers;
* memorization is measured on the same training images in inference mode and in training mode
  (BatchNorm on batch statistics); beside it, the level a model that memorized nothing would show:
  ``(1 − corrected) / (C − 1)``, its errors on the corrupted examples spread over the other classes.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tfq_noise import methods, results, stats

from .blocks import readme_option
from .validation import NoRuns, check_runs

HUMAN_NOISE = ("aggre", "random1", "random2", "random3", "worst")
# The paper's Fig. 2 (ResNet20, CIFAR-10, 50k images, 200 epochs), read off the plot: s → clean test
# accuracy in % of (baseline, quantization W4/A4). Shown beside symmetric-noise CIFAR-10 results.
PAPER_FIG2 = {0.0: (90.0, 91.0), 0.2: (83.0, 86.0), 0.4: (77.0, 82.0), 0.6: (62.0, 74.0), 0.8: (38.0, 58.0)}
NUM_CLASSES = 10


# How a label marks a run computed in another precision than float32 ("baseline [bf16]").
PRECISION_TAGS = {"mixed_bfloat16": "bf16"}


def variant_label(final: Mapping) -> str:
    """'quantization W4/A4', 'dropout (dropout_rate=0.3)', 'baseline [bf16]', ... from a final.json (its
    ``precision``: :meth:`ExperimentTables.load` fills it in for runs that predate the field)."""
    method = final["method"]
    defaults = methods.default_hparams(method)
    hp = {**defaults, **final.get("hparams", {})}
    changed = {k: v for k, v in hp.items() if defaults.get(k) != v}
    label = method
    if "quantization" in method:
        label = method.replace("quantization", f"quantization W{hp['weight_bits']}/A{hp['activation_bits']}")
        changed = {k: v for k, v in changed.items() if k not in ("weight_bits", "activation_bits")}
    if changed:
        label += " (" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"
    precision = final.get("precision", "float32")
    if precision != "float32":
        label += f" [{PRECISION_TAGS.get(precision, precision)}]"
    return label


def is_default_variant(label: str) -> bool:
    return "(" not in label and "[" not in label and "W8/A8" not in label and "W2/" not in label and "W3/" not in label


def ordered(grouped: Mapping) -> list[str]:
    """Row order: the baseline first, then by label."""
    return sorted(grouped, key=lambda l: (l != "baseline", l))


def _selects(final: Mapping) -> bool:
    return final.get("test_accuracy_last5") is None or "early_stopping" in final["method"]


def metric(final: Mapping, key: str):
    """A value of a run, derived ones included; None where the run cannot give it."""
    if key == "last_epoch_test_accuracy" and key not in final:  # runs written before the field
        return None if _selects(final) else final.get("test_accuracy")
    if key == "peak_to_final":
        last, best = metric(final, "last_epoch_test_accuracy"), final.get("best_test_accuracy")
        return None if last is None or best is None else best - last
    if key == "no_memorization_level":
        corrected = final.get("last_corrected")
        return None if corrected is None else (1.0 - corrected) / (final.get("num_outputs", NUM_CLASSES) - 1)
    if key == "test_accuracy_last5" and "early_stopping" in final["method"]:
        return None  # an average over epochs the method discards
    return final.get(key)


def paired(runs: Sequence[Mapping], reference: Sequence[Mapping], value: Callable[[Mapping], float | None]):
    """Per-seed differences ``value(run) − value(reference run)`` on the seeds both hold."""
    return stats.paired_differences({f["seed"]: value(f) for f in runs}, {f["seed"]: value(f) for f in reference})


def _percent(key):
    return lambda f: None if metric(f, key) is None else 100 * metric(f, key)


def mean_text(mean_std_n: tuple[float, float, int], digits: int = 1) -> str:
    """``35.0 ± 7.1 (n=2)`` from :func:`tfq_noise.stats.mean_std`'s result; one value: ``35.0``; none: ``—``."""
    mean, std, n = mean_std_n
    if n == 0:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})" if n > 1 else f"{mean:.{digits}f}"


def _cell(runs, key, digits=1) -> str:
    return mean_text(stats.mean_std([_percent(key)(f) for f in runs]), digits)


class Rate(float):
    """A noise rate that names its column: the labels as given (``noise_type=original``, rate 0)."""

    def __new__(cls, value, name: str):
        rate = super().__new__(cls, value)
        rate.name = name
        return rate


def rate_name(rate) -> str:
    return getattr(rate, "name", None) or f"s = {rate:.0%}"


def _rate_header(rates) -> list[str]:
    return ["| method | " + " | ".join(rate_name(r) for r in rates) + " |", "|---|" + "---|" * len(rates)]


def _has(grouped, key, rates) -> bool:
    return any(metric(f, key) is not None for l in grouped for r in rates for f in grouped[l].get(r, []))


def method_by_rate(grouped, rates, cell: Callable[[str, object], str], keep: Callable[[str], bool] = None):
    lines = _rate_header(rates)
    for label in ordered(grouped):
        if keep is None or keep(label):
            lines.append(f"| {label} | " + " | ".join(cell(label, r) for r in rates) + " |")
    return lines


def gain_cell(grouped, key="test_accuracy"):
    def cell(label, rate):
        base = grouped.get("baseline", {}).get(rate, [])
        if label == "baseline" or not base:
            return "—"
        return stats.Paired.of(paired(grouped[label].get(rate, []), base, _percent(key))).text()
    return cell


FILTERED_MARK = "†"
FILTERED_NOTE = ("† Over the corrupted examples the run kept: it dropped the examples it flagged (confident "
                 "learning) before its final training, so the others were never its training labels.")


def filtered(runs) -> bool:
    """True if any of the runs trained on a filtered subset of the training set (``data_filter``)."""
    return any(f.get("data_filter") for f in runs)


def _any_filtered(grouped) -> bool:
    return any(filtered(runs) for by_key in grouped.values() for runs in by_key.values())


def memorization_cell(grouped):
    def cell(label, rate):
        runs = grouped[label].get(rate, [])
        inference, _, n = stats.mean_std([_percent("last_memorized")(f) for f in runs])
        if n == 0:
            return "—"
        training, _, m = stats.mean_std([_percent("last_trainmode_memorized")(f) for f in runs])
        level, _, _ = stats.mean_std([_percent("no_memorization_level")(f) for f in runs])
        training_text = f"{training:.0f}" if m else "—"
        return f"{inference:.0f} / {training_text} ({level:.0f}){FILTERED_MARK if filtered(runs) else ''}"
    return cell


def protocol_text(finals) -> str:
    """One line per distinct protocol of the runs (from their config.json)."""
    seen = collections.Counter()
    for f in finals:
        config = results.read_json(Path(f["run_dir"]) / results.CONFIG)
        augment = config.get("augment")
        augment = {True: "crop_flip", False: "none"}.get(augment, augment)
        train = f.get("train_examples") or "?"
        seen[(train, config["epochs"], config["batch_size"], config["learning_rate"],
              config.get("lr_schedule", "constant"), augment, config.get("precision", "float32"),
              config.get("test_size", 0))] += 1
    lines = []
    for (train, epochs, batch, lr, schedule, augment, precision, test), n in sorted(seen.items(), key=str):
        subset = f"; test accuracy on a fixed subset of {test} test images" if test else ""
        lines.append(f"Protocol ({n} runs): {train} training images, {epochs} epochs, batch {batch}, Adam {lr:g} "
                     f"({schedule}), augmentation {augment}, {precision}{subset}.")
    return "\n".join(lines)


@dataclasses.dataclass
class ExperimentTables:
    """An experiment's finished runs, grouped by method variant and noise setting."""

    directory: Path
    finals: list
    synthetic: dict  # {label: {rate: [final]}}
    human: dict  # {label: {CIFAR-10N label set: [final]}}

    @classmethod
    def load(cls, directory) -> "ExperimentTables":
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no experiment folder at {directory}")
        finals = results.load_finals(directory)
        if not finals:
            raise NoRuns(f"{directory} holds no finished runs (no <run>/{results.FINAL}): nothing to report")
        if any(f.get("per_task_f1") for f in finals):
            raise ValueError(f"{directory} holds multi-label runs: use python -m experiments.table1 {directory}")
        check_runs(finals)
        for f in finals:
            f["precision"] = results.run_precision(f)
        for f in finals:
            f.setdefault("train_examples", train_examples(f))
        synthetic = collections.defaultdict(lambda: collections.defaultdict(list))
        human = collections.defaultdict(lambda: collections.defaultdict(list))
        for f in finals:
            if f["noise_type"] in HUMAN_NOISE:
                human[variant_label(f)][f["noise_type"]].append(f)
            else:
                synthetic[variant_label(f)][f["noise_rate"]].append(f)
        return cls(directory, finals, synthetic, human)

    @property
    def rates(self) -> list:
        rates = sorted({r for by_rate in self.synthetic.values() for r in by_rate})
        synthetic = [f for f in self.finals if f["noise_type"] not in HUMAN_NOISE]
        if synthetic and all(f["noise_type"] == "original" for f in synthetic):  # rate 0: the labels as given
            return [Rate(r, "labels as given") for r in rates]
        return rates

    @property
    def num_classes(self) -> int | None:
        """The runs' class count if they share one, else None."""
        classes = {f.get("num_outputs", NUM_CLASSES) for f in self.finals}
        return classes.pop() if len(classes) == 1 else None

    @property
    def paper_reference(self) -> bool:
        synthetic = [f for f in self.finals if f["noise_type"] not in HUMAN_NOISE]
        return bool(synthetic) and all(f.get("dataset") == "cifar10" and f["noise_type"] == "symmetric" for f in synthetic)

    # ------------------------------------------------------------------ sections
    def accuracy_section(self) -> list[str]:
        g, rates = self.synthetic, self.rates
        if not rates:
            return []
        accuracy = (["### Clean test accuracy at the last epoch (early stopping: its selected epoch), %", ""]
                    + method_by_rate(g, rates, lambda l, r: _cell(g[l].get(r, []), "test_accuracy")))
        if not [label for label in g if label != "baseline"]:
            return accuracy + ["", "No method beside the baseline has finished yet: no gains to report.", ""]
        return (accuracy
                + ["", "### Gain over the baseline at the last epoch, paired by seed (points)", "",
                   "Mean ± sample std of the per-seed differences (same images, same noise draw), and how many "
                   "seeds gain; one seed: its difference.", ""]
                + method_by_rate(g, rates, gain_cell(g), keep=lambda l: l != "baseline") + [""])

    def memorization_section(self) -> list[str]:
        g, rates = self.synthetic, [r for r in self.rates if r > 0 or getattr(r, "name", None)]
        if not rates or not _has(g, "last_memorized", rates):
            return []
        c = self.num_classes
        chance = f"{1 / c:.1%}".replace(".0%", "%") if c else "1/C"
        return (["### Memorization at the end (% of the corrupted training examples predicted as their wrong "
                 "label): inference mode / training mode (no-memorization level)", "",
                 f"Random predictions would give {chance}; a model that memorized nothing and spread its errors on "
                 "the corrupted examples evenly over the other classes would give the level in brackets, "
                 f"(1 − corrected) / {c - 1 if c else '(C − 1)'}.", ""]
                + method_by_rate(g, rates, memorization_cell(g)) + [""]
                + ([FILTERED_NOTE, ""] if _any_filtered(g) else []))

    def best_epoch_section(self) -> list[str]:
        g, rates = self.synthetic, self.rates
        if not rates:
            return []
        return (["### Best epoch, selected on the test set (optimistic: the literature's convention, for "
                 "comparison with published numbers), %", ""]
                + method_by_rate(g, rates, lambda l, r: _cell(g[l].get(r, []), "best_test_accuracy"))
                + ["", "### Over-fitting: peak minus final clean test accuracy (points)", ""]
                + method_by_rate(g, rates, lambda l, r: _cell(g[l].get(r, []), "peak_to_final"),
                                 keep=lambda l: _has({l: g[l]}, "peak_to_final", rates)) + [""])

    def batchnorm_section(self) -> list[str]:
        g, rates = self.synthetic, self.rates
        if not rates or not _has(g, "last_mode_gap", rates):
            return []
        return (["### BatchNorm: training-mode minus inference-mode accuracy on the same training images, at the "
                 "end (points)", "",
                 "Large when BatchNorm's moving statistics have not settled (or dropout is on in training mode).",
                 ""]
                + method_by_rate(g, rates, lambda l, r: _cell(g[l].get(r, []), "last_mode_gap"),
                                 keep=lambda l: _has({l: g[l]}, "last_mode_gap", rates)) + [""])

    def last5_section(self) -> list[str]:
        g, rates = self.synthetic, self.rates
        keep = lambda l: _has({l: g[l]}, "test_accuracy_last5", rates)  # noqa: E731
        if not rates or not any(keep(l) for l in g):
            return []
        return (["### Mean of the last 5 epochs (methods that keep their last epoch only), %", ""]
                + method_by_rate(g, rates, lambda l, r: _cell(g[l].get(r, []), "test_accuracy_last5"), keep=keep)
                + [""])

    def paper_section(self) -> list[str]:
        if not self.paper_reference:
            return []
        base, ours = self.synthetic.get("baseline", {}), self.synthetic.get("quantization W4/A4", {})
        lines = ["### Against the paper's Fig. 2 (its values read off the plot; 50k images, 200 epochs)", "",
                 "| s | paper baseline | paper W4/A4 | paper gain | baseline | W4/A4 | gain, paired |",
                 "|---|---|---|---|---|---|---|"]
        for rate in sorted(set(PAPER_FIG2) | set(base) | set(ours)):
            paper = PAPER_FIG2.get(rate)
            cells = [f"{rate:.0%}"] + ([f"{paper[0]:.0f}", f"{paper[1]:.0f}", f"{paper[1] - paper[0]:+.0f}"]
                                       if paper else ["—"] * 3)
            cells += [_cell(base.get(rate, []), "test_accuracy"), _cell(ours.get(rate, []), "test_accuracy")]
            diffs = paired(ours.get(rate, []), base.get(rate, []), _percent("test_accuracy"))
            cells.append(stats.Paired.of(diffs).text() if diffs else "not run")
            lines.append("| " + " | ".join(cells) + " |")
        return lines + ["", "Here: clean test accuracy at the last epoch, %."] + [""]

    def human_section(self) -> list[str]:
        if not self.human:
            return []
        types = sorted({t for by_type in self.human.values() for t in by_type})
        lines = ["### CIFAR-10N (human label noise): last epoch, %; gain over the baseline paired by seed; "
                 "memorized at the end, inference / training mode", "",
                 "| method | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
        for label in ordered(self.human):
            cells = []
            for t in types:
                runs = self.human[label].get(t, [])
                gain = gain_cell(self.human)(label, t)
                cells.append(f"{_cell(runs, 'test_accuracy')}; {gain}; {memorization_cell(self.human)(label, t)}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return lines + [""] + ([FILTERED_NOTE, ""] if _any_filtered(self.human) else [])

    def precision_note(self, name: str | None = None) -> list[str]:
        """Which rows ran in another precision than float32, and the command that compares them with their twins."""
        other = collections.Counter(f["precision"] for f in self.finals if f["precision"] != "float32")
        if not other:
            return []
        tags = ", ".join(f"[{PRECISION_TAGS.get(p, p)}]: {n} runs in {p}" for p, n in sorted(other.items()))
        return [f"Rows marked {tags}, paired with the float32 baseline like the others; "
                f"`python -m experiments.precision {name or self.directory.as_posix()}` compares them with their "
                "float32 twins.", ""]

    def adequacy_warning(self) -> str | None:
        """A plain warning when the runs are too short or too small for their figures to mean anything."""
        accuracies = [f["test_accuracy"] for f in self.finals if f.get("test_accuracy") is not None]
        if not accuracies:
            return None
        chance = 1.0 / NUM_CLASSES
        if max(accuracies) < chance + 0.05:
            return (f"**These runs are too short or too small to mean anything**: every run ends within 5 points "
                    f"of chance ({chance:.0%}; best {max(accuracies):.1%}). They check the plumbing; their gains "
                    "and comparisons are noise.")
        if max(f.get("epochs", 0) for f in self.finals) < 5:
            return ("**These runs are too short to mean anything**: under 5 epochs, no network has started to fit "
                    "its wrong labels, so no regularizer can show its effect.")
        return None

    def summary_markdown(self, figures: Sequence[str] = ()) -> str:
        lines = [f"# {self.directory.name}: results", ""]
        warning = self.adequacy_warning()
        if warning:
            lines += [warning, ""]
        run_warnings = sorted({w for f in self.finals for w in (f.get("warnings") or ()) if isinstance(w, str)})
        if run_warnings:  # what the runs themselves found doubtful (e.g. too few steps an epoch), first
            lines += [f"**Warning**: {w}" for w in run_warnings] + [""]
        if self.finals:
            caveats = sorted({f.get("data_caveat") for f in self.finals if f.get("data_caveat")})
            lines += [f"{len(self.finals)} finished runs; dataset {self.finals[0]['dataset']}.", "",
                      protocol_text(self.finals), ""]
            lines += [f"Data caveat: {c}" for c in caveats] + ([""] if caveats else [])
        lines += (self.accuracy_section() + self.paper_section() + self.memorization_section()
                  + self.best_epoch_section() + self.batchnorm_section() + self.last5_section()
                  + self.human_section() + self.precision_note())
        wall = [f["wall_seconds"] for f in self.finals if f.get("wall_seconds")]
        if wall:
            lines += [f"Wall time per run: median {median(wall) / 60:.1f} min, max {max(wall) / 60:.1f} min.", ""]
        if figures:
            lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
        return "\n".join(lines)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def train_examples(final: Mapping):
    """A run's training-set size, from its provenance.json; None when it has none."""
    provenance = Path(final["run_dir"]) / results.PROVENANCE
    if provenance.exists():
        data = results.read_json(provenance).get("data", {})
        if isinstance(data, Mapping) and data.get("train_examples"):
            return data["train_examples"]
    return None


def readme_block(directory, name: str | None = None, page: str = "README.md") -> str:
    """A page's tables for an experiment folder (between its report markers); ``name``: how the page
    ``markdown`` names the folder (default: the path as given)."""
    report = ExperimentTables.load(directory)
    lines = [f"Generated by `python -m experiments.report {name or Path(directory).as_posix()} "
             f"{readme_option(page)}` from "
             f"{len(report.finals)} committed runs.", ""]
    lines += (report.accuracy_section() + report.paper_section() + report.memorization_section()
              + report.human_section() + report.precision_note(name))
    return "\n".join(lines)


RUN_COLUMNS = ("run", "variant", "method", "noise_type", "noise_rate", "realized_flip_rate", "seed", "epochs",
               "epochs_trained", "selected_epoch", "test_accuracy", "last_epoch_test_accuracy", "best_test_accuracy",
               "test_accuracy_last5", "last_memorized", "last_trainmode_memorized", "last_corrected", "last_mode_gap",
               "average_f1", "precision", "wall_seconds")


def runs_table(finals) -> list[dict]:
    """One row per run, the scalars of its final.json (absent ones left empty)."""
    return [{column: (variant_label(f) if column == "variant" else metric(f, column)) for column in RUN_COLUMNS}
            for f in sorted(finals, key=lambda f: (f["noise_type"], f["noise_rate"], f["method"], f.get("precision", ""), f["seed"]))]

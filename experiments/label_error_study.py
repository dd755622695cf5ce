"""How well each finished run of an experiment finds its own wrong labels: the label-error study.

    python -m experiments.label_error_study results/recipe_search/recipe_n20k_e20_none \\
        --output_dir=results/label_errors/recipe_n20k_e20_none --readme

For every finished run with noisy training labels whose clean labels are known (synthetic noise, CIFAR-10N),
its saved training-set probabilities (``predictions.npz``, in-sample: the model was fitted on those labels)
are scored by :mod:`experiments.find_label_errors`' two scorers, ``cleanlab`` (confident learning,
``cleanlab.filter.find_label_issues``) and ``disagreement`` (1 − p(given label)), against the truth
(given ≠ clean): precision, recall and F1 of the flagged set and the average precision (area under the
precision–recall curve) of the ranking. A run of the ``cleanlab`` method also brings its K fold models'
out-of-sample validation probabilities, assembled into one K-fold score of every training example. A run
that trained on a filtered subset (``data_filter`` in its final.json, e.g. the cleanlab method's retraining)
is scored by its folds only: its own predictions cover the examples it kept, not the training set.

Writes ``study.json`` (one row per scored run or fold set) and ``study.md`` into ``--output_dir``, atomically;
``--readme`` rewrites README.md's block ``<!-- labelerrors:begin DIR -->`` from ``study.json``
(``--readme=FILE``: that of another page; ``tests/test_readme.py`` fails when it differs). Cost is counted in trainings: one for a single run, K + 1
for the cleanlab method's folds (its final retraining included).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from tfq_noise import results, stats

from . import blocks, tables
from . import find_label_errors as fle

STUDY_JSON, STUDY_MD = "study.json", "study.md"
SCORERS = ("cleanlab", "disagreement")


def _finished_runs(experiment_dir: Path, wanted: set[str] | None) -> list[tuple[Path, dict]]:
    """(run folder, final.json) of every finished run with predictions."""
    runs = []
    for run_dir in sorted(p for p in Path(experiment_dir).iterdir() if p.is_dir()):
        final_path = run_dir / results.FINAL
        if not final_path.is_file() or not (run_dir / results.PREDICTIONS).is_file():
            continue
        final = results.read_json(final_path)
        if wanted is not None and final["method"] not in wanted:
            continue
        final["precision"] = results.run_precision({**final, "run_dir": str(run_dir)})
        runs.append((run_dir, final))
    return runs


def score(run_dirs: list[Path], split: str) -> dict | None:
    """Both scorers' flags and rankings measured against the truth; None where the truth is unknown or no
    label is wrong."""
    examples, _ = fle.load_examples(run_dirs, split)
    if examples.clean is None:
        return None
    truth = examples.labels != examples.clean
    if not truth.any():
        return None
    found = fle.find_issues(examples)
    scorers = {name: {**fle.flag_metrics(found["flagged"][name], truth),
                      "average_precision": fle.average_precision(found["ranking_score"][name], truth)}
               for name in SCORERS}
    for entry in scorers.values():  # nothing flagged: no precision, but no wrong label found either (F1 0)
        if entry["flagged"] == 0:
            entry["f1"] = 0.0
    return {"examples": int(len(truth)), "corrupted_rate": float(truth.mean()), "scorers": scorers,
            "accuracy_on_given_labels": float((found["predicted"] == examples.labels).mean())}


def study(experiment_dir, methods: set[str] | None = None, print_fn=print) -> list[dict]:
    """One row per run (in-sample, 1 training) and per cleanlab fold set (out-of-sample, K + 1 trainings)."""
    rows = []
    for run_dir, final in _finished_runs(Path(experiment_dir), methods):
        sources = [] if final.get("data_filter") else [("single run, in-sample", [run_dir], "train", 1)]
        folds = sorted((run_dir / results.FOLDS).glob("fold*")) if (run_dir / results.FOLDS).is_dir() else []
        if folds and all((f / results.PREDICTIONS).is_file() for f in folds):
            sources.append((f"{len(folds)}-fold, out-of-sample", folds, "val", len(folds) + 1))
        for kind, dirs, split, trainings in sources:
            start = time.time()
            measured = score(dirs, split)
            if measured is None:
                continue
            rows.append({"run": run_dir.name, "variant": tables.variant_label(final), "method": final["method"],
                         "noise_type": final["noise_type"], "noise_rate": final["noise_rate"], "seed": final["seed"],
                         "predictions": kind, "trainings": trainings, **measured})
            best = measured["scorers"]["cleanlab"]
            print_fn(f"{run_dir.name} [{kind}]: average precision {fle._fmt(best['average_precision'])}, cleanlab "
                     f"F1 {fle._fmt(best['f1'])} ({time.time() - start:.0f}s)")
    return rows


def _setting(row) -> str:
    return row["noise_type"] if row["noise_type"] != "symmetric" else f"s = {row['noise_rate']:.0%}"


def _cell(values) -> str:
    return tables.mean_text(stats.mean_std(values), 3)


def table(rows: list[dict]) -> list[str]:
    """Markdown: per setting, method and kind of predictions, the mean ± sample std over seeds."""
    grouped = collections.defaultdict(list)
    for row in rows:
        grouped[(row["noise_type"], row["noise_rate"], row["variant"] != "baseline", row["variant"],
                 row["predictions"])].append(row)
    lines = ["| setting | method | predictions | trainings | wrong labels | average precision (cleanlab) | "
             "cleanlab: flagged, precision, recall, F1 | disagreement F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(grouped):
        group = grouped[key]
        clean = [r["scorers"]["cleanlab"] for r in group]
        flags = (f"{_mean(c['flagged'] for c in clean):,.0f}, {_mean_text(c['precision'] for c in clean)}, "
                 f"{_mean_text(c['recall'] for c in clean)}, {_cell([c['f1'] for c in clean])}")
        lines.append(f"| {_setting(group[0])} | {key[3]} | {key[4]} | {group[0]['trainings']} | "
                     f"{_mean(r['corrupted_rate'] for r in group):.1%} | {_cell([c['average_precision'] for c in clean])}"
                     f" | {flags} | {_cell([r['scorers']['disagreement']['f1'] for r in group])} |")
    return lines


def _mean(values) -> float:
    return stats.mean_std(list(values))[0]


def _mean_text(values) -> str:
    """The mean to 3 decimals; '—' where no seed has a value (no example flagged: no precision)."""
    mean, _, n = stats.mean_std(list(values))
    return f"{mean:.3f}" if n else "—"


def readme_block(output_dir, name: str | None = None, page: str = blocks.README) -> str:
    data = results.read_json(Path(output_dir) / STUDY_JSON)
    lines = [f"Generated by `python -m experiments.label_error_study {data['experiment']} "
             f"--output_dir={name or Path(output_dir).as_posix()} {blocks.readme_option(page)}` from "
             f"{len(data['rows'])} scored "
             f"prediction sets (cleanlab {data['cleanlab_version']}). Average precision of a random ranking: the "
             "share of wrong labels; F1 and the other flag figures: means over seeds.", ""]
    return "\n".join(lines + table(data["rows"])) + "\n"


def write(experiment_dir, output_dir, methods=None, print_fn=print) -> Path:
    import cleanlab

    rows = study(experiment_dir, methods, print_fn)
    if not rows:
        raise ValueError(f"{experiment_dir}: no finished run with predictions.npz and known wrong labels to score")
    output_dir = Path(output_dir)
    data = {"experiment": Path(experiment_dir).as_posix().rstrip("/"), "cleanlab_version": cleanlab.__version__,
            "split": "each run's training examples (in-sample); a cleanlab run's folds: their validation splits",
            "rows": rows}
    results.write_json(output_dir / STUDY_JSON, data)
    results.atomic_write_text(output_dir / STUDY_MD, "# Label-error study\n\n" + readme_block(output_dir))
    return output_dir / STUDY_JSON


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.label_error_study",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment_dir", help="an experiment folder of finished runs")
    parser.add_argument("--output_dir", required=True, help="where study.json and study.md go")
    parser.add_argument("--methods", help="only these methods, comma-separated (default: every method)")
    blocks.add_readme_option(parser, "labelerrors", "OUTPUT_DIR")
    args, status = blocks.parse(parser, argv)
    if args is None:
        return status
    if not Path(args.experiment_dir).is_dir():
        print(f"error: no experiment folder at {args.experiment_dir}", file=sys.stderr)
        return 2
    methods = None if not args.methods else {m.strip() for m in args.methods.split(",") if m.strip()}

    def work():  # bad runs (find_label_errors.InputError, results.DamagedFile) are ValueErrors: exit status 2
        path = write(args.experiment_dir, args.output_dir, methods)
        print(f"wrote {path} and {Path(args.output_dir) / STUDY_MD}")
        return blocks.rewrite(args.output_dir, args.readme, "labelerrors", readme_block) if args.readme else 0

    return blocks.guarded(work)


if __name__ == "__main__":
    sys.exit(main())

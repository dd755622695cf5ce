"""Hyper-parameter search with keras-tuner over this project's runs (the paper's Fig. 3, searched).

    python -m experiments.tune --flagfile=experiments/configs/cifar10_standard_n45k.flags \\
        --tune_method=quantization,pruning,dropout,weight_decay,label_smoothing --noise_rates=0.4 --seeds=0

Each trial is one ordinary run of :func:`tfq_noise.train.train`, written to the same results folder as
the grid (a finished run is reused, not trained again), and scored on the validation split: its labels
are as noisy as the training labels unless ``--validation_labels=clean``, so the pick is what a user
could make; the test set never takes part (its accuracy is recorded beside each trial, not used). Each
family's trials and its pick are written to ``<results>/<experiment>/tuning/<family>_<noise>_seed<k>.json``.

keras-tuner builds Keras 3 models by default, which tfmot cannot quantize; here ``run_trial`` is
overridden so the tuner only proposes values and this project trains tf_keras models. Every trial's
status is checked: a trial that did not really run fails the command.

Several machines: keras-tuner's own distributed mode. Start the same command on every machine with
``KERASTUNER_TUNER_ID`` (``chief`` on one, ``tuner0``, ``tuner1``, ... on the others),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` (the chief's address) set and one shared
``--results_dir``; the chief hands out trials and writes the summary, each worker trains the trials it
is given (docs/experiments.md, "A sweep on several machines").
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from absl import app, flags

import tfq_noise  # noqa: F401
from . import run as runner

FLAGS = flags.FLAGS
flags.DEFINE_list("tune_method", ["quantization"], "Families to tune, comma-separated: quantization, pruning, "
                  "dropout, weight_decay, label_smoothing (or 'all').")
flags.DEFINE_integer("max_trials", 20, "Upper bound on trials per family (the grids below are smaller).")
flags.DEFINE_string("tuner_dir", None, "keras-tuner's own folder (default: <results>/<experiment>/tuning).")

# The paper's Fig. 3 settings, and the other families' fair grids, as keras-tuner search spaces. Fixed
# settings ride along: pruning ranks filters by their BatchNorm gamma (the grid's pruning rule); weight
# decay is given as a multiple (0.3x, 1x, 3x) of the paper's total shrinkage over its 200 epochs.
SEARCH_SPACES = {
    "quantization": lambda hp: {"weight_bits": (b := hp.Choice("bits", [2, 3, 4, 8])), "activation_bits": b},
    "pruning": lambda hp: {"prune_ratio": hp.Choice("prune_ratio", [0.25, 0.5, 0.75, 0.9]),
                           "prune_criterion": "bn_gamma"},
    "dropout": lambda hp: {"dropout_rate": hp.Choice("dropout_rate", [0.1, 0.3, 0.5]),
                           "dropout_position": hp.Choice("dropout_position", ["head", "blocks"])},
    "weight_decay": lambda hp: {"weight_decay": hp.Choice("weight_decay", [0.003, 0.01, 0.03]),
                                "decay_rule": "paper_total"},
    "label_smoothing": lambda hp: {"label_smoothing": hp.Choice("label_smoothing", [0.1, 0.3, 0.6])},
}
SUMMARY_DIR = "tuning"


def families(names) -> list[str]:
    """The families named (``all``: every one), in the given order; ValueError for an unknown name."""
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(SEARCH_SPACES)
    unknown = [n for n in names if n not in SEARCH_SPACES]
    if unknown or not names:
        raise ValueError(f"--tune_method: unknown family {unknown or 'none given'}; choose from "
                         f"{', '.join(SEARCH_SPACES)} or all")
    return names


def method_spec(method: str, hparams: dict) -> str:
    """The runner's ``--methods`` entry for a setting: ``dropout[dropout_rate=0.3;dropout_position=blocks]``."""
    return f"{method}[{';'.join(f'{k}={v}' for k, v in sorted(hparams.items()))}]" if hparams else method


def make_tuner(base_config, method: str, results_dir: Path, paths, tuner_dir: Path, max_trials: int, log: list):
    """A keras-tuner GridSearch whose trials are runs of ``method`` (appended to ``log`` as they finish)."""
    import keras_tuner

    from tfq_noise import results
    from tfq_noise.train import release_memory, train

    space = SEARCH_SPACES[method]

    class RunTuner(keras_tuner.GridSearch):
        def run_trial(self, trial, *args, **kwargs):
            hparams = space(trial.hyperparameters)
            config = dataclasses.replace(base_config, method=method, hparams=hparams)
            run_dir = results_dir / config.run_name
            if results.run_state(run_dir) == "done":
                final = results.read_json(run_dir / results.FINAL)
            else:
                final = train(config, run_dir, paths)
                release_memory()
            metrics = final["final_metrics"]
            log.append({"trial": trial.trial_id, "run": config.run_name, "hparams": hparams,
                        "method": method_spec(method, hparams), "val_accuracy": metrics["val_accuracy"],
                        "test_accuracy_not_used": metrics["test_accuracy"]})
            print(f"trial {trial.trial_id}: {config.run_name} val_accuracy={metrics['val_accuracy']:.4f}", flush=True)
            return {"val_accuracy": metrics["val_accuracy"]}

    return RunTuner(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=max_trials,
                    directory=str(tuner_dir.parent), project_name=tuner_dir.name, overwrite=False)


def is_worker() -> bool:
    """True in keras-tuner's distributed mode on a machine that is not the chief."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


def summarize(tuner, family: str, base, log: list) -> dict:
    """The family's trials (from the oracle, so a distributed sweep's trials are all there) and its pick."""
    trials = list(tuner.oracle.trials.values())
    bad = [t.trial_id for t in trials if t.status != "COMPLETED"]
    if bad or not trials:
        raise RuntimeError(f"keras-tuner trials did not run: {bad or 'none at all'}")
    space = SEARCH_SPACES[family]
    rows = []
    for t in trials:
        hparams = space(t.hyperparameters)
        run_name = dataclasses.replace(base, method=family, hparams=hparams).run_name
        rows.append({"trial": t.trial_id, "run": run_name, "hparams": hparams,
                     "method": method_spec(family, hparams), "val_accuracy": t.score})
    best = max(rows, key=lambda r: r["val_accuracy"])
    return {"family": family, "noise_type": base.noise_type, "noise_rate": base.noise_rate, "seed": base.seed,
            "selection": f"highest last-epoch accuracy on the {base.validation_labels} validation split",
            "trials": sorted(rows, key=lambda r: r["run"]), "pick": best}


def main(argv):
    from absl import logging

    from tfq_noise import results

    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        print(f"error: unexpected argument {argv[1]!r} (flags only; see --help)", file=sys.stderr)
        return 2
    try:
        chosen = families(FLAGS.tune_method)
        configs = runner.build_grid()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results_dir = Path(FLAGS.results_dir) / FLAGS.experiment
    summary_dir = Path(FLAGS.tuner_dir or results_dir / SUMMARY_DIR)
    for base in {(c.noise_type, c.noise_rate, c.seed): c for c in configs}.values():
        for family in chosen:
            name = f"{family}_{base.noise_type}-{base.noise_rate:.2f}_seed{base.seed}"
            log: list = []
            tuner = make_tuner(base, family, results_dir, runner.data_paths(), summary_dir / f"kt_{name}",
                               FLAGS.max_trials, log)
            tuner.search()
            if is_worker():
                print(f"{name}: this worker ran {len(log)} trial(s): {[r['run'] for r in log]}", flush=True)
                continue
            try:
                summary = summarize(tuner, family, base, log)
            except RuntimeError as error:
                print(f"error: {name}: {error}", file=sys.stderr)
                return 1
            results.write_json(summary_dir / f"{name}.json", summary)
            pick = summary["pick"]
            print(f"{name}: {len(summary['trials'])} trials completed; pick on validation: {pick['method']} "
                  f"(val_accuracy {pick['val_accuracy']:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)

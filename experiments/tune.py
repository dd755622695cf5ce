"""Hyper-parameter search with keras-tuner over this project's runs (the paper's Fig. 3, searched).

    python -m experiments.tune --flagfile=experiments/configs/cpu_cifar10.flags \\
        --tune_method=quantization --noise_rates=0.4

Each trial is one ordinary run of :func:`tfq_noise.train.train`, written to the
same results folder as the grid (a finished run is reused, not trained again),
and scored on the validation split (noisy labels by default: what a user
has). keras-tuner builds Keras 3 models by default, which tfmot cannot
quantize; here ``run_trial`` is overridden so the tuner only proposes values
and this project trains tf_keras models. Every trial's status is checked:
a trial that did not really run fails the command.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from absl import app, flags

import tfq_noise  # noqa: F401
from experiments import run as runner

FLAGS = flags.FLAGS
flags.DEFINE_enum("tune_method", "quantization", ["quantization", "pruning", "dropout"], "Method to tune.")
flags.DEFINE_integer("max_trials", 20, "Upper bound on trials (the grids below are smaller).")
flags.DEFINE_string("tuner_dir", None, "keras-tuner's own folder (default: <results>/<experiment>/tuner_<method>).")

# The paper's Fig. 3 settings, as keras-tuner search spaces.
SEARCH_SPACES = {
    "quantization": lambda hp: {"weight_bits": (b := hp.Choice("bits", [2, 3, 4, 8])), "activation_bits": b},
    "pruning": lambda hp: {"prune_ratio": hp.Choice("prune_ratio", [0.25, 0.5, 0.75, 0.9])},
    "dropout": lambda hp: {"dropout_rate": hp.Choice("dropout_rate", [0.1, 0.3, 0.5]),
                           "dropout_position": hp.Choice("dropout_position", ["head", "stages", "blocks"])},
}


def make_tuner(base_config, method: str, results_dir: Path, paths, tuner_dir: Path, max_trials: int):
    import keras_tuner

    from tfq_noise.train import release_memory, train

    space = SEARCH_SPACES[method]

    class RunTuner(keras_tuner.GridSearch):
        def run_trial(self, trial, *args, **kwargs):
            config = dataclasses.replace(base_config, method=method, hparams=space(trial.hyperparameters))
            run_dir = results_dir / config.run_name
            from tfq_noise import results

            if results.run_state(run_dir) == "done":
                final = results.read_json(run_dir / results.FINAL)
            else:
                final = train(config, run_dir, paths)
                release_memory()
            metrics = final["final_metrics"]
            print(f"trial {trial.trial_id}: {config.run_name} val_accuracy={metrics['val_accuracy']:.4f}", flush=True)
            return {"val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"]}

    return RunTuner(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=max_trials,
                    directory=str(tuner_dir.parent), project_name=tuner_dir.name, overwrite=False)


def main(argv):
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    try:
        configs = runner.build_grid()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results_dir = Path(FLAGS.results_dir) / FLAGS.experiment
    tuned = {}
    for base in {(c.noise_type, c.noise_rate, c.seed): c for c in configs}.values():
        name = f"tuner_{FLAGS.tune_method}_{base.noise_type}-{base.noise_rate:.2f}_seed{base.seed}"
        tuner_dir = Path(FLAGS.tuner_dir or results_dir) / name
        tuner = make_tuner(base, FLAGS.tune_method, results_dir, runner.data_paths(), tuner_dir, FLAGS.max_trials)
        tuner.search()
        trials = tuner.oracle.trials.values()
        bad = [t.trial_id for t in trials if t.status != "COMPLETED"]
        if bad or not trials:
            print(f"error: keras-tuner trials did not run: {bad or 'none at all'}", file=sys.stderr)
            return 1
        best = tuner.oracle.get_best_trials(1)[0]
        tuned[name] = best.hyperparameters.values
        print(f"{name}: {len(trials)} trials completed; best on validation: {best.hyperparameters.values} "
              f"(val_accuracy {best.score:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)

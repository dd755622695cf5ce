"""Runs a grid of methods × noise settings × seeds, then writes the report.

    python -m experiments.run --flagfile=experiments/configs/smoke.flags
    python -m experiments.run --flagfile=experiments/configs/cpu_cifar10.flags --seeds=0,1

Each run writes ``<results_dir>/<experiment>/<run>/`` (see tfq_noise.results).
Finished runs are skipped, a killed run resumes from its last epoch, and
``--shard_index/--num_shards`` split the grid over a cluster's job array.
Every flag is checked, and the data found, before anything is trained or written.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from absl import app, flags

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
from experiments import grid

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", "default", "Name of the experiment (a folder under --results_dir).")
flags.DEFINE_string("results_dir", "results", "Where results are written.")
flags.DEFINE_string("dataset", "cifar10", "Dataset name: cifar10, ferplus, bp4d.")
flags.DEFINE_string("model", "resnet20", "Model name.")
flags.DEFINE_string("model_kwargs", "", "Model builder arguments, key=value,...  (e.g. batchnorm=false).")
flags.DEFINE_string("methods", "baseline,quantization",
                    "Methods, comma-separated; name[key=value;...] sets a method's hyper-parameters; "
                    "'+' composes methods (quantization+early_stopping).")
flags.DEFINE_string("hparams", "", "Hyper-parameters for every method that has them, key=value,...")
flags.DEFINE_list("noise_type", ["symmetric"],
                  "Noise type(s): symmetric, symmetric_exclusive, pair, or CIFAR-10N aggre, random1-3, worst.")
flags.DEFINE_list("noise_rates", ["0.4"], "Noise rates s in [0, 1] (ignored for CIFAR-10N types).")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_integer("epochs", 20, "Epochs per run.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (the peak, under a schedule).")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "Learning-rate schedule: constant, or cosine decay to 0 at the last step.")
flags.DEFINE_integer("train_size", 0, "Training examples drawn from the training set (0: all).")
flags.DEFINE_float("validation_fraction", 0.1, "Share of the training examples held out for validation.")
flags.DEFINE_enum("validation_labels", "noisy", ["noisy", "clean"], "Labels of the validation split.")
flags.DEFINE_enum("augment", "none", ["none", "flip", "crop_flip", "false", "true"],
                  "Training augmentation: none, flip, or crop_flip (4-pixel pad + crop, flip); the paper "
                  "mentions none. true/false are the older spellings of crop_flip/none.")
flags.DEFINE_integer("eval_train_size", 10000, "Training examples scored each epoch for memorization.")
flags.DEFINE_string("dataset_kwargs", "", "Dataset options, key=value,... (e.g. annotators=1 for FER+).")
flags.DEFINE_string("cifar10_dir", None, "Offline CIFAR-10 in the official binary layout "
                    "(default: $TFQ_NOISE_CIFAR10_DIR, else TFDS).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("cifar10n_path", None, "CIFAR-10N CIFAR-10_human.pt (default: $TFQ_NOISE_CIFAR10N_PATH).")
flags.DEFINE_string("ferplus_dir", None, "Unpacked FER+ folder (default: $TFQ_NOISE_FERPLUS_DIR).")
flags.DEFINE_string("bp4d_dir", None, "BP4D-Spontaneous root (default: $TFQ_NOISE_BP4D_DIR).")
flags.DEFINE_integer("shard_index", 0, "This job's shard, 0 <= shard_index < num_shards.")
flags.DEFINE_integer("num_shards", 1, "Number of shards the grid is split into.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step (slower on this CPU; measure first).")
flags.DEFINE_bool("deterministic", False, "Deterministic ops (slower).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "one_device"], "tf.distribute strategy.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                  "Compute precision; mixed_bfloat16 is faster on CPUs with AVX512-BF16 (measure accuracy first).")
flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (to try MirroredStrategy).")
flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).")
flags.DEFINE_bool("retry_failed", False, "Run again the runs that failed (e.g. NaN loss).")
flags.DEFINE_bool("dry_run", False, "List the grid and the state of each run, train nothing.")
flags.DEFINE_bool("report", True, "Write the report after the grid.")
flags.DEFINE_integer("verbose", 0, "Keras fit verbosity (0: one line per epoch from this project).")


def _configure_tensorflow():
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    if FLAGS.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)


def build_grid():
    """The runs of this shard; raises ValueError on any bad flag."""
    base = dict(
        experiment=FLAGS.experiment, dataset=FLAGS.dataset, model=FLAGS.model,
        model_kwargs=grid.parse_assignments(FLAGS.model_kwargs) if FLAGS.model_kwargs else {},
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule,
        train_size=FLAGS.train_size, validation_fraction=FLAGS.validation_fraction,
        validation_labels=FLAGS.validation_labels,
        augment={"true": "crop_flip", "false": "none"}.get(FLAGS.augment, FLAGS.augment), eval_train_size=FLAGS.eval_train_size,
        dataset_kwargs=grid.parse_assignments(FLAGS.dataset_kwargs) if FLAGS.dataset_kwargs else {},
        jit_compile=FLAGS.jit_compile, deterministic=FLAGS.deterministic, strategy=FLAGS.strategy,
        precision=FLAGS.precision,
    )
    try:
        rates = [float(r) for r in FLAGS.noise_rates]
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise ValueError(f"--noise_rates must be numbers and --seeds integers: {error}") from None
    for rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--noise_rates: {rate} is outside [0, 1]")
    from tfq_noise.data import noise
    from tfq_noise.multitask import NOISE_TYPES as DATASET_NOISE_TYPES

    allowed = DATASET_NOISE_TYPES.get(FLAGS.dataset, noise.NOISE_TYPES)
    for noise_type in FLAGS.noise_type:
        if noise_type not in allowed:
            raise ValueError(f"--noise_type: {noise_type!r} is not a noise type of {FLAGS.dataset}; "
                             f"choose from {', '.join(allowed)}")
    shared = grid.parse_assignments(FLAGS.hparams) if FLAGS.hparams else {}
    configs = grid.expand(base, grid.parse_methods(FLAGS.methods), FLAGS.noise_type, rates, seeds, shared)
    return grid.shard(configs, FLAGS.shard_index, FLAGS.num_shards)


def data_paths():
    from tfq_noise.datasets import DataPaths

    return DataPaths(cifar10_dir=FLAGS.cifar10_dir, tfds_data_dir=FLAGS.tfds_data_dir,
                     cifar10n_path=FLAGS.cifar10n_path, ferplus_dir=FLAGS.ferplus_dir, bp4d_dir=FLAGS.bp4d_dir)


def changed_settings(run_dir: Path, config) -> list[str]:
    """Settings of an existing run that differ from ``config`` (settings it predates count as default)."""
    from tfq_noise import results

    path = run_dir / results.CONFIG
    if not path.exists():
        return []
    stored, current = results.read_json(path), config.to_dict()
    if isinstance(stored.get("augment"), bool):  # older spelling of the same setting
        stored["augment"] = "crop_flip" if stored["augment"] else "none"
    changed = [k for k in stored if k != "hparams" and stored[k] != current.get(k)]
    changed += [f"hparams.{k}" for k, v in stored.get("hparams", {}).items()
                if v != current["hparams"].get(k)]
    return [f"{k}: {stored.get(k, stored.get('hparams', {}).get(k.split('.')[-1]))!r} → "
            f"{current.get(k, current['hparams'].get(k.split('.')[-1]))!r}" for k in changed]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv):
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # keep one line per epoch, not TensorFlow's checkpoint chatter
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        configs = build_grid()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from tfq_noise import results

    experiment_dir = Path(FLAGS.results_dir) / FLAGS.experiment
    states = {c.run_name: results.run_state(experiment_dir / c.run_name) for c in configs}
    for config in configs:
        changed = changed_settings(experiment_dir / config.run_name, config)
        if changed:
            print(f"error: {config.run_name} exists with other settings ({', '.join(changed)}); "
                  "use another --experiment or --results_dir", file=sys.stderr)
            return 2
    todo = [c for c in configs if states[c.run_name] in ("new", "partial")
            or (FLAGS.retry_failed and states[c.run_name] == "failed")]
    print(f"{FLAGS.experiment}: {len(configs)} runs in this shard, {len(configs) - len(todo)} already done, "
          f"{len(todo)} to run", flush=True)
    if FLAGS.dry_run:
        for c in configs:
            print(f"  {states[c.run_name]:8s} {c.run_name}")
        return 0

    _configure_tensorflow()
    from tfq_noise.datasets import prepare
    from tfq_noise.train import RunFailed, release_memory, train

    paths = data_paths()
    if todo:
        try:  # find the data before anything is trained or written
            prepare(todo[0], paths)
        except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: TFDS could not download
            print(f"error: cannot load the data for {todo[0].run_name}: {error}", file=sys.stderr)
            return 2
    failures = 0
    for i, config in enumerate(todo, 1):
        run_dir = experiment_dir / config.run_name
        if FLAGS.retry_failed:
            (run_dir / results.FAILED).unlink(missing_ok=True)
        print(f"[{i}/{len(todo)}] {config.run_name} ({states[config.run_name]})", flush=True)
        start = time.time()
        try:
            final = train(config, run_dir, paths, verbose=FLAGS.verbose)
            metric = final.get("average_f1") if final.get("average_f1") is not None else final["test_accuracy"]
            gap = final.get("last_mode_gap")
            print(f"[{i}/{len(todo)}] done in {time.time() - start:.0f}s: headline={metric:.4f} "
                  + (f"train/inference-mode gap={gap:+.4f} " if gap is not None else "")
                  + f"peak RSS {peak_rss_mib():.0f} MiB", flush=True)
        except RunFailed as error:
            failures += 1
            print(f"[{i}/{len(todo)}] FAILED: {error}", flush=True)
        finally:
            release_memory()
    if FLAGS.report and experiment_dir.exists() and FLAGS.num_shards == 1:
        from experiments import report, table1

        if any(f.get("per_task_f1") for f in results.load_finals(experiment_dir)):
            table1.write_table1([experiment_dir])  # multi-label runs: the paper's Table 1 layout
        else:
            report.write_report(experiment_dir)
    return 1 if failures else 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()

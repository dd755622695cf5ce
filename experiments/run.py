"""Runs a grid of methods × noise settings × seeds, then writes the report.

    python -m experiments.run --flagfile=experiments/configs/smoke.flags
    python -m experiments.run --flagfile=experiments/configs/cpu_cifar10.flags --seeds=0,1

Each run writes ``<results_dir>/<experiment>/<run>/`` (see tfq_noise.results).
Finished runs are skipped, a killed run resumes from its last epoch, and
``--shard_index/--num_shards`` split the grid over a cluster's job array, and
``--only_folds`` a cleanlab run's K fold trainings over jobs or processes.
Every flag is checked, and the data found, before anything is trained or written.
Exit status: 0 done; 1 a run failed or could not write its files; 2 bad flags, data or results folder
(nothing written); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). See docs/reliability.md.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or ``kill``'s stop), raised where Ctrl-C raises KeyboardInterrupt, so that it
    unwinds the same way: locks released, no file half-written, finished epochs kept."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one (a scheduler's reminder) must not cut the clean-up
    raise Terminated


def interrupted_status(error: KeyboardInterrupt) -> int:
    """Says in one line that the command was stopped and how to resume; returns its exit status."""
    how = "interrupted by SIGTERM" if isinstance(error, Terminated) else "interrupted"
    print(f"\n{how}: finished epochs are kept; run the same command again to resume", file=sys.stderr, flush=True)
    return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
try:  # TensorFlow's import takes seconds: a Ctrl-C then is a stop like any other
    from absl import app, flags

    import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
    from . import grid
except KeyboardInterrupt as _stop:
    if __name__ != "__main__":
        raise
    os._exit(interrupted_status(_stop))  # nothing is written during start-up

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", "default", "Name of the experiment (a folder under --results_dir).")
flags.DEFINE_string("results_dir", "results", "Where results are written.")
flags.DEFINE_string("dataset", "cifar10", "Dataset name: cifar10, ferplus, bp4d, folder (your images: "
                    "--folder_path), or tfds:NAME (a TFDS image-classification dataset, e.g. tfds:mnist).")
flags.DEFINE_string("model", "resnet20", "Model name: resnet20, multitask*, or a tf_keras.applications model "
                    "(MobileNetV2, ResNet50...: untrained, logits; see --help).")
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
flags.DEFINE_integer("test_size", 0, "Test examples scored (0: the whole test set; else a fixed subset, for "
                     "quick looks only).")
flags.DEFINE_string("dataset_kwargs", "", "Dataset options, key=value,... (e.g. annotators=1 for FER+).")
flags.DEFINE_string("cifar10_dir", None, "Offline CIFAR-10 in the official binary layout "
                    "(default: $TFQ_NOISE_CIFAR10_DIR, else TFDS).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("cifar10n_path", None, "CIFAR-10N CIFAR-10_human.pt (default: $TFQ_NOISE_CIFAR10N_PATH).")
flags.DEFINE_string("ferplus_dir", None, "Unpacked FER+ folder (default: $TFQ_NOISE_FERPLUS_DIR).")
flags.DEFINE_string("bp4d_dir", None, "BP4D-Spontaneous root (default: $TFQ_NOISE_BP4D_DIR).")
flags.DEFINE_string("folder_path", None, "--dataset=folder: an image folder (one sub-folder per class, "
                    "optional test/) or a CSV path,label[,clean_label][,split] (default: $TFQ_NOISE_FOLDER_PATH).")
flags.DEFINE_integer("shard_index", 0, "This job's shard, 0 <= shard_index < num_shards.")
flags.DEFINE_integer("num_shards", 1, "Number of shards the grid is split into.")
flags.DEFINE_list("only_folds", [], "Train only these fold runs (0-based) of each run's data filter "
                  "(cleanlab's K cross-validation folds), not the runs themselves: one fold per job or process "
                  "(e.g. --only_folds=$SLURM_ARRAY_TASK_ID). Rerun without the flag to train the rest and "
                  "the final model; it reuses the finished folds and waits for folds other jobs still hold.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step (slower on this CPU; measure first).")
flags.DEFINE_bool("deterministic", False, "Deterministic ops (slower).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "one_device"], "tf.distribute strategy.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                  "Compute precision; mixed_bfloat16 is faster on CPUs with AVX512-BF16 (measure accuracy first).")
flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (to try MirroredStrategy).",
                     lower_bound=0)
flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).", lower_bound=0)
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
        test_size=FLAGS.test_size,
        dataset_kwargs=grid.parse_assignments(FLAGS.dataset_kwargs) if FLAGS.dataset_kwargs else {},
        jit_compile=FLAGS.jit_compile, deterministic=FLAGS.deterministic, strategy=FLAGS.strategy,
        precision=FLAGS.precision,
    )
    if not FLAGS.noise_rates or not FLAGS.seeds or not FLAGS.methods.strip():
        empty = [name for name, value in (("--noise_rates", FLAGS.noise_rates), ("--seeds", FLAGS.seeds),
                                          ("--methods", FLAGS.methods.strip())) if not value]
        raise ValueError(f"{', '.join(empty)} is empty: the grid would hold no run")
    try:
        rates = [float(r) for r in FLAGS.noise_rates]
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise ValueError(f"--noise_rates must be numbers and --seeds integers: {error}") from None
    for rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--noise_rates: {rate} is outside [0, 1]")
    from tfq_noise.data import noise_types

    allowed = noise_types(FLAGS.dataset)  # raises on an unknown dataset
    for noise_type in FLAGS.noise_type:
        if noise_type not in allowed:
            raise ValueError(f"--noise_type: {noise_type!r} is not a noise type of {FLAGS.dataset}; "
                             f"choose from {', '.join(allowed)}")
    shared = grid.parse_assignments(FLAGS.hparams) if FLAGS.hparams else {}
    configs = grid.expand(base, grid.parse_methods(FLAGS.methods), FLAGS.noise_type, rates, seeds, shared)
    configs = grid.shard(configs, FLAGS.shard_index, FLAGS.num_shards)
    check_only_folds(configs)
    return configs


def only_folds() -> list[int]:
    """--only_folds as fold numbers (empty: train whole runs)."""
    try:
        folds = [int(k) for k in FLAGS.only_folds]
    except ValueError as error:
        raise ValueError(f"--only_folds must be fold numbers: {error}") from None
    if len(set(folds)) != len(folds):
        raise ValueError(f"--only_folds names a fold twice: {FLAGS.only_folds}")
    return folds


def check_only_folds(configs) -> None:
    """Raises ValueError if --only_folds names a fold that some run of the grid does not train."""
    folds = only_folds()
    for config in configs if folds else ():
        try:
            config.recipe.check_folds(folds)
        except ValueError as error:
            raise ValueError(f"--only_folds: {config.run_name}: {error}; choose --methods accordingly") from None


def data_paths():
    from tfq_noise.data import DataPaths

    return DataPaths(cifar10_dir=FLAGS.cifar10_dir, tfds_data_dir=FLAGS.tfds_data_dir,
                     cifar10n_path=FLAGS.cifar10n_path, ferplus_dir=FLAGS.ferplus_dir, bp4d_dir=FLAGS.bp4d_dir,
                     folder_path=FLAGS.folder_path)


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
        print(f"error: unexpected argument(s) {' '.join(argv[1:])}: every setting is a flag, --name=value "
              "(python -m experiments.run --help lists them)", file=sys.stderr)
        return 2
    try:
        configs = build_grid()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from tfq_noise import results

    experiment_dir = Path(FLAGS.results_dir) / FLAGS.experiment
    try:
        states = {c.run_name: results.run_state(experiment_dir / c.run_name) for c in configs}
    except OSError as error:
        print(f"error: cannot read {experiment_dir}: {error}", file=sys.stderr)
        return 2
    for config in configs:
        if states[config.run_name] == "damaged":
            continue  # trained again from scratch below
        changed = changed_settings(experiment_dir / config.run_name, config)
        if changed:
            print(f"error: {config.run_name} exists with other settings ({', '.join(changed)}); "
                  "use another --experiment or --results_dir", file=sys.stderr)
            return 2
    counts = collections.Counter(states.values())
    todo = [c for c in configs if states[c.run_name] in ("new", "partial", "damaged")
            or (FLAGS.retry_failed and states[c.run_name] == "failed")]
    failed_left = 0 if FLAGS.retry_failed else counts["failed"]
    print(f"{FLAGS.experiment}: {len(configs)} runs in this shard: {counts['done']} done, "
          + (f"{counts['failed']} failed ({'retried' if FLAGS.retry_failed else 'use --retry_failed'}), "
             if counts["failed"] else "")
          + (f"{counts['damaged']} damaged (trained again), " if counts["damaged"] else "")
          + f"{len(todo)} to run", flush=True)
    if configs and counts["done"] == len(configs):
        committed = " (committed to git)" if tracked_by_git(experiment_dir / configs[0].run_name / results.FINAL) else ""
        print(f"every run is already finished in {experiment_dir}{committed}: nothing to train. To train them "
              f"again, give another --results_dir or --experiment, or delete their folders under {experiment_dir}",
              flush=True)
    if FLAGS.dry_run:
        for c in configs:
            print(f"  {states[c.run_name]:8s} {c.run_name}")
        return 0
    if todo:
        problem = writable_problem(experiment_dir)
        if problem:
            print(f"error: cannot write results to {experiment_dir}: {problem}", file=sys.stderr)
            return 2

    _configure_tensorflow()
    from tfq_noise.data import prepare
    from tfq_noise.train import RunFailed, release_memory, train

    paths = data_paths()
    for config in data_representatives(todo):  # every run's data, found before anything is trained
        try:
            prepare(config, paths)
        except Exception as error:  # noqa: BLE001  (any reason the data cannot be read stops the grid)
            print(f"error: cannot load the data for {config.run_name}: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return 2
    folds = only_folds()
    if folds:
        return run_folds(todo, folds, experiment_dir, paths)
    failures, skipped = 0, 0
    for i, config in enumerate(todo, 1):
        run_dir = experiment_dir / config.run_name
        owner = results.acquire_run_lock(run_dir)
        if owner is not None:
            skipped += 1
            print(f"[{i}/{len(todo)}] {config.run_name}: held by {owner.get('host')} pid {owner.get('pid')}, "
                  "skipped", flush=True)
            continue
        try:
            state = results.run_state(run_dir)
            if state == "done":  # finished by another job since the grid was listed
                print(f"[{i}/{len(todo)}] {config.run_name}: done by another job", flush=True)
                continue
            if state == "damaged":
                print(f"[{i}/{len(todo)}] {config.run_name}: damaged files, training it again from scratch",
                      flush=True)
                for path in run_dir.iterdir():
                    if path.name != results.LOCK:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            results.remove_stale_temporaries(run_dir)
            if FLAGS.retry_failed:
                (run_dir / results.FAILED).unlink(missing_ok=True)
            print(f"[{i}/{len(todo)}] {config.run_name} ({states[config.run_name]})", flush=True)
            start = time.time()
            final = train(config, run_dir, paths, verbose=FLAGS.verbose)
            metric = final.get("average_f1") if final.get("average_f1") is not None else final["test_accuracy"]
            gap = final.get("last_mode_gap")
            print(f"[{i}/{len(todo)}] done in {time.time() - start:.0f}s: headline={metric:.4f} "
                  + (f"train/inference-mode gap={gap:+.4f} " if gap is not None else "")
                  + f"peak RSS {peak_rss_mib():.0f} MiB", flush=True)
            for warning in final.get("warnings") or ():
                print(f"[{i}/{len(todo)}] warning: {warning}", flush=True)
        except RunFailed as error:
            failures += 1
            print(f"[{i}/{len(todo)}] FAILED: {error}", flush=True)
        except Exception as error:  # noqa: BLE001  (re-raised below unless the disk or folder failed it)
            if not write_problem(error):
                raise
            print(f"error: {config.run_name} stopped: {write_problem(error)}; it keeps its finished epochs: fix "
                  "the cause (e.g. free disk space) and run the same command again to resume", file=sys.stderr)
            return 1
        finally:
            results.release_run_lock(run_dir)
            release_memory()
    if skipped:
        print(f"{skipped} runs held by other jobs were skipped: run the command again once they finish",
              flush=True)
    if FLAGS.report and experiment_dir.exists() and FLAGS.num_shards == 1 and not skipped:
        from . import report, table1

        try:
            if any(f.get("per_task_f1") for f in results.load_finals(experiment_dir)):
                table1.write_table1([experiment_dir])  # multi-label runs: the paper's Table 1 layout
            else:
                report.write_report(experiment_dir)
        except (ValueError, OSError) as error:
            print(f"error: the report was not written: {error}", file=sys.stderr)
            return 1
    if failures or failed_left:
        print(f"{failures + failed_left} runs failed (see their failed.json); --retry_failed runs them again",
              file=sys.stderr)
        return 1
    return 0


def run_folds(todo, folds, experiment_dir: Path, paths) -> int:
    """--only_folds: trains the chosen fold runs of each run to do; the runs' final trainings are left."""
    from tfq_noise.train import RunFailed, release_memory, train_folds

    left, failures = 0, 0
    for i, config in enumerate(todo, 1):
        run_dir = experiment_dir / config.run_name
        print(f"[{i}/{len(todo)}] {config.run_name}: folds {','.join(map(str, folds))}", flush=True)
        start = time.time()
        try:
            finished = train_folds(config, run_dir, folds, paths, verbose=FLAGS.verbose)
        except RunFailed as error:
            failures += 1
            print(f"[{i}/{len(todo)}] FAILED: {error}", flush=True)
            continue
        finally:
            release_memory()
        left += len(folds) - len(finished)
        print(f"[{i}/{len(todo)}] folds {','.join(map(str, finished)) or 'none'} finished in "
              f"{time.time() - start:.0f}s; peak RSS {peak_rss_mib():.0f} MiB", flush=True)
    if left:
        print(f"{left} folds held by other jobs were skipped", flush=True)
    print("run the command again without --only_folds to train the remaining folds and the final models",
          flush=True)
    return 1 if failures else 0


def write_problem(error: BaseException) -> str | None:
    """One line on an error of the disk or the results folder (a full disk while a checkpoint or a file was
    written, a folder made read-only), or None for any other error."""
    text = " ".join(str(error).split())
    if isinstance(error, OSError) or any(s in text for s in ("No space left", "Disk quota", "Read-only file system")):
        return f"{type(error).__name__}: {text[:300]}"
    return None


def tracked_by_git(path: Path) -> bool:
    """Whether ``path`` is a file committed to (tracked by) the git repository it is in."""
    try:
        return subprocess.run(["git", "-C", str(Path(path).parent), "ls-files", "--error-unmatch", Path(path).name],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def data_representatives(configs) -> list:
    """One run per distinct data setting (dataset, noise type, options, subset): checking these finds
    every run's data."""
    seen = {}
    for c in configs:
        key = (c.dataset, c.noise_type, json.dumps(dict(c.dataset_kwargs), sort_keys=True), c.train_size,
               c.validation_fraction, c.validation_labels)
        seen.setdefault(key, c)
    return list(seen.values())


def writable_problem(directory: Path) -> str | None:
    """Why results cannot be written under ``directory``, or None. Creates nothing."""
    for parent in [directory, *directory.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable (choose another --results_dir)"
            return None
    return None


def help_text() -> str:
    """--help: what the runner does, what it knows by name, and its flags."""
    from tfq_noise import methods
    from tfq_noise.data import DATASET_NOISE_TYPES
    from tfq_noise.models import APPLICATIONS, MODELS

    method_lines = [f"  {name:16s} {m.description}; defaults {dict(m.defaults) or '{}'}"
                    for name, m in methods.METHODS.items()]
    noise_lines = [f"  {name}: {', '.join(types)}" for name, types in DATASET_NOISE_TYPES.items()]
    return "\n".join([
        (__doc__ or "").strip(), "",
        "Models (--model): " + ", ".join(sorted(m for m in MODELS if m not in APPLICATIONS)),
        "  and tf_keras.applications (untrained, logits; own arguments in --model_kwargs, e.g. alpha=0.35): "
        + ", ".join(sorted(APPLICATIONS)),
        "Datasets (--dataset) and their noise types (--noise_type):", *noise_lines,
        "Methods (--methods, comma-separated; '+' composes; name[key=value;...] sets hyper-parameters):",
        *method_lines, "",
        "Exit status: 0 done; 1 a run failed, could not write its files, or the report could not be written; "
        "2 bad flags, data or results folder (nothing written); 130 interrupted (Ctrl-C), 143 terminated "
        "(SIGTERM): rerun the same command to resume.", "",
        "Flags:", FLAGS.module_help(sys.modules[__name__]) if __name__ in FLAGS.flags_by_module_dict() else
        FLAGS.main_module_help(),
    ])


def _main_interruptible(argv):
    try:
        return main(argv)
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM (Terminated)
        return interrupted_status(error)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def parse_flags(argv):
    """absl's flag parsing, with a bad flag (unknown, misspelled, a bad value, an unreadable flagfile) said in
    one ``error:`` line and exit status 2, not absl's FATAL line and status 1."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {one_line(error)} (python -m experiments.run --help lists the flags)", file=sys.stderr)
        sys.exit(2)


def run():
    """The runner's entry point (``python -m experiments.run``, ``tfq-noise run``): SIGTERM stops it like Ctrl-C."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if any(arg in ("-h", "--help", "-?", "--helpshort") for arg in sys.argv[1:]):
            print(help_text())
            sys.exit(0)
        app.run(_main_interruptible, flags_parser=parse_flags)
    except KeyboardInterrupt as error:  # during flag parsing or --help
        sys.exit(interrupted_status(error))


if __name__ == "__main__":
    run()

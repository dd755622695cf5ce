"""The one training loop, for every method, dataset and model.

``train(config, run_dir)`` prepares the data, builds the model the recipe asks
for, fits it with Keras (checkpoint every epoch, resume after a kill, stop on a
NaN loss), evaluates clean test metrics and memorization each epoch, and
writes the run's files (:mod:`tfq_noise.results`).
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from tfq_noise import keras, methods, results
from tfq_noise.callbacks import (EpochBackup, EpochEvaluation, HistoryWriter, NanGuard, ProgressPrinter, WallClock,
                                 check_backups)
from tfq_noise.config import RunConfig
from tfq_noise.data.pipeline import make_dataset
from tfq_noise.data import DataPaths, RunData, prepare
from tfq_noise.methods.confident_learning import fold_data as make_fold_data  # train_fold's argument is fold_data
from tfq_noise.models import build_model


@dataclasses.dataclass(frozen=True)
class TrainContext:
    """What methods may need to know about the run they act on."""

    epochs: int
    steps_per_epoch: int
    checkpoint_dir: Path
    validation_metric: str
    selection_start_epoch: int = 0
    learning_rate_sum: float | None = None  # sum of the learning rate over every training step


def learning_rate(config: RunConfig, steps_per_epoch: int):
    """The optimizer's learning rate: a number (constant) or a per-step schedule (cosine to 0)."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.epochs * steps_per_epoch,
                                                      alpha=0.0)
    return config.learning_rate


def learning_rate_sum(config: RunConfig, steps_per_epoch: int) -> float:
    """Σ_t lr_t over the run's steps (what decoupled weight decay multiplies): lr·T, or lr·T/2 for cosine."""
    steps = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        t = np.arange(steps, dtype=np.float64)
        return float(np.sum(config.learning_rate * 0.5 * (1.0 + np.cos(np.pi * t / steps))))
    return float(config.learning_rate * steps)


class RunFailed(RuntimeError):
    """The run stopped without a result (e.g. a NaN loss); ``failed.json`` says why."""


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/cpu:0" if not tf.config.list_physical_devices("GPU") else "/gpu:0")
    return tf.distribute.get_strategy()


def build_run_model(config: RunConfig, input_shape, num_outputs: int, steps_per_epoch: int = 1):
    """The model a run trains: the architecture with the recipe's changes (dropout, L2, quantization...).

    Built under the run's precision policy; the policy is restored afterwards.
    """
    recipe = config.recipe
    kwargs = {**dict(config.model_kwargs), **recipe.model_kwargs()}
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        model = build_model(config.model, num_classes=num_outputs, input_shape=tuple(input_shape), **kwargs)
        context = TrainContext(config.epochs, steps_per_epoch, Path("."), "")
        return recipe.transform_model(model, context)
    finally:
        keras.mixed_precision.set_global_policy(previous)


# Metrics of the final model, taken from the last history row (or measured again on the selected model).
FINAL_METRIC_PREFIXES = ("test_", "val_", "train_", "trainmode_", "memorized", "corrected", "mode_gap")


def write_predictions(model, data: RunData, path: Path, exact: tuple[str, ...] = ()) -> None:
    """The final model's class probabilities on the training and validation sets (:func:`results.write_predictions`;
    ``exact``: the splits kept as float16, e.g. a fold's held-out split, which a method reads back).

    With the labels (noisy and clean) and, where known, the examples' indices in the dataset's training
    set, a label-error analysis or a peer method can reuse the run without its weights. The test set's are not
    kept (no reader; its metrics are in ``history.csv`` and ``final.json``).
    """
    from tfq_noise.callbacks import predict_logits

    def probabilities(images):
        logits = np.asarray(predict_logits(model, images, data.mean, data.std), np.float64)
        if data.task.multilabel:
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    arrays = {
        "train_probs": probabilities(data.train_images),
        "train_labels": np.asarray(data.train_labels),
        "train_clean_labels": np.asarray(data.train_clean_labels),
        "train_corrupted": np.asarray(data.train_corrupted, bool),
    }
    if len(data.val_images):
        arrays.update(val_probs=probabilities(data.val_images), val_labels=np.asarray(data.val_labels))
    for name in ("train_index", "val_index"):
        if getattr(data, name, None) is not None:
            arrays[name] = np.asarray(getattr(data, name), np.int64)
    results.write_predictions(path, arrays, exact=exact, softmax=not data.task.multilabel)


# Fewer optimizer steps than this leave BatchNorm's moving statistics (momentum 0.99: 0.99^100 = 37% of their
# start) far from the data's: inference-mode accuracy then sits near chance whatever the training did.
MIN_STEPS = 100


def few_steps_warnings(train_examples: int, batch_size: int, epochs: int) -> list[str]:
    """Why a run's figures will mean little because it takes too few steps (empty if it takes enough)."""
    steps = int(np.ceil(train_examples / batch_size))
    if train_examples < batch_size:
        return [f"{train_examples} training examples are fewer than one batch of {batch_size}: one step an epoch, "
                f"{epochs} in all, too few for BatchNorm's moving statistics to settle (expect chance accuracy and a "
                "large train/inference-mode gap); lower --batch_size or give more images"]
    if steps * epochs < MIN_STEPS:
        return [f"only {steps * epochs} training steps ({steps} an epoch x {epochs} epochs, {train_examples} examples "
                f"in batches of {batch_size}): under {MIN_STEPS}, BatchNorm's moving statistics do not settle "
                "(expect a large train/inference-mode gap); lower --batch_size or train more epochs or images"]
    return []


def resume_from_scratch_if_inconsistent(run_dir: Path, name: str, print_fn=print) -> None:
    """Checks a killed run's epoch backups (:func:`check_backups`) before it resumes, and that its history
    holds every epoch up to the backup's; says what it found, and removes what cannot be resumed from."""
    backup_dir = run_dir / results.CHECKPOINTS / "backup"
    epoch, notes = check_backups(backup_dir)
    rows = results.read_history(run_dir / results.HISTORY)
    if epoch is not None and [r["epoch"] for r in rows[: epoch + 1]] != list(range(epoch + 1)):
        notes.append(f"{run_dir / results.HISTORY} lacks epochs up to {epoch + 1}, the checkpoint's")
        shutil.rmtree(backup_dir, ignore_errors=True)
        epoch = None
    if notes and epoch is None:  # the early-stopping state of the discarded epochs goes with them
        for stale in ("best_epoch.json", "best.weights.h5"):
            (run_dir / results.CHECKPOINTS / stale).unlink(missing_ok=True)
    for note in notes:
        print_fn(f"[{name}] {note}", flush=True)
    if notes:
        print_fn(f"[{name}] " + (f"resuming after epoch {epoch + 1}, the last good one" if epoch is not None
                                 else "no good checkpoint left: training from scratch"), flush=True)


def _summary(config: RunConfig, history: list[dict], final_eval: dict, task, wall_seconds: float,
             data: RunData, best_epoch) -> dict:
    headline = task.headline_metric
    selects = config.recipe.selects_best_epoch()
    series = [row[headline] for row in history if row.get(headline) is not None]
    accuracy = [row["test_accuracy"] for row in history if row.get("test_accuracy") is not None]
    final = {
        "experiment": config.experiment,
        "run": config.run_name,
        "dataset": config.dataset,
        "dataset_kwargs": dict(config.dataset_kwargs),
        "model": config.model,
        "method": config.method,
        "precision": config.precision,
        "noise_type": config.noise_type,
        "noise_rate": config.noise_rate,
        "seed": config.seed,
        "hparams": config.resolved_hparams,
        "epochs": config.epochs,
        "epochs_trained": len(history),
        "selected_epoch": best_epoch if best_epoch is not None else len(history) - 1,
        "test_accuracy": final_eval.get("test_accuracy"),
        # A method that selects an epoch discards the others: no average over them.
        "test_accuracy_last5": float(np.mean(accuracy[-5:])) if accuracy and not selects else None,
        "last_epoch_test_accuracy": accuracy[-1] if accuracy else None,
        "best_test_accuracy": float(np.max(accuracy)) if accuracy else None,
        "wall_seconds": round(wall_seconds, 1),
        "realized_flip_rate": data.info.get("train_flip_rate"),
        "data_caveat": data.info.get("caveat"),
        "normalization": {"mean": data.mean.tolist(), "std": data.std.tolist()},
        "input_shape": list(data.input_shape),
        "num_outputs": int(task.num_classes),
        "final_metrics": final_eval,
    }
    if task.multilabel:
        final["average_f1"] = final_eval.get("test_average_f1")
        final["average_f1_last5"] = float(np.mean(series[-5:])) if series and not selects else None
        final["per_task_f1"] = {name: final_eval.get(f"test_f1_{name}") for name in task.task_names}
        final["decision_threshold"] = task.threshold
        if data.info.get("oracle_average_f1") is not None:  # the F1 ceiling of this threshold (FER+)
            final["oracle_average_f1"] = data.info["oracle_average_f1"]
            final["oracle_per_task_f1"] = data.info["oracle_per_task_f1"]
    # Memorization of the final model (the selected epoch's for early stopping), in both modes.
    for key in ("memorized", "corrected", "train_noisy_accuracy", "trainmode_memorized", "trainmode_corrected",
                "trainmode_train_noisy_accuracy", "mode_gap"):
        if final_eval.get(key) is not None:
            final[f"last_{key}"] = final_eval[key]
    return final


def train(config: RunConfig, run_dir: str | Path, paths: DataPaths | None = None, data: RunData | None = None,
          verbose: int = 0, print_fn=print, exact_predictions: tuple[str, ...] = ()) -> dict:
    """Trains one run into ``run_dir`` and returns its ``final.json`` content.

    Resumes from the last finished epoch if ``run_dir`` holds checkpoints (from the one before if the last
    is damaged, from scratch without a good one, saying so). Raises :class:`RunFailed` (after writing
    ``failed.json``) on a NaN loss; an OSError (e.g. a full disk) leaves the run resumable.
    """
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / results.CHECKPOINTS
    clock = WallClock(checkpoint_dir / "wall_clock.json")  # first saved after a fold or an epoch: no folder before
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = data if data is not None else prepare(config, paths)
    task = data.task
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_json(run_dir / results.CONFIG, config.to_dict())
    recipe = config.recipe

    def fold_predictions(name, fold):
        predictions = train_fold(config, run_dir / results.FOLDS / name, fold, verbose, print_fn)
        clock.save()
        return predictions

    data, data_filter = recipe.filter_training_data(data, config.seed, fold_predictions)
    if data_filter:
        release_memory()  # the fold models
        keras.utils.set_random_seed(config.seed)
    results.write_json(run_dir / results.PROVENANCE, results.provenance(data.info))

    steps_per_epoch = int(np.ceil(len(data.train_images) / config.batch_size))
    context = TrainContext(config.epochs, steps_per_epoch, checkpoint_dir, task.validation_metric,
                           recipe.selection_start_epoch(config.epochs), learning_rate_sum(config, steps_per_epoch))
    warnings = few_steps_warnings(len(data.train_images), config.batch_size, config.epochs)
    for warning in warnings:
        print_fn(f"[{config.run_name}] warning: {warning}", flush=True)
    resume_from_scratch_if_inconsistent(run_dir, config.run_name, print_fn)
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        model = build_run_model(config, data.input_shape, task.num_classes, steps_per_epoch)
        lr = learning_rate(config, steps_per_epoch)
        optimizer = recipe.optimizer(lr, context) or keras.optimizers.Adam(lr)
        model.compile(optimizer=optimizer, loss=recipe.loss(task), metrics=recipe.fit_metrics(task),
                      jit_compile=config.jit_compile)

    train_ds = make_dataset(data.train_images, data.train_labels, config.batch_size, training=True,
                            augment=config.augment, seed=config.seed, mean=data.mean, std=data.std,
                            sample_weights=data.train_weights)
    train_ds = recipe.transform_dataset(train_ds, task.num_classes, task.multilabel, config.seed)  # e.g. mixup
    # A resumed run's first epoch sets the scale of divergence (a fresh one: its first batch).
    previous = results.read_csv(run_dir / results.HISTORY) if (checkpoint_dir / "backup").exists() else []
    nan_guard = NanGuard(reference_loss=previous[0].get("loss") if previous else None)
    callbacks = [
        EpochEvaluation(data, eval_train_size=config.eval_train_size, train_batch_size=config.batch_size),
        *recipe.callbacks(context),
        nan_guard,
        HistoryWriter(run_dir / results.HISTORY),
        keras.callbacks.TensorBoard(str(checkpoint_dir / "tensorboard"), write_graph=False, profile_batch=0),
        ProgressPrinter(config.run_name, config.epochs, print_fn),
        clock,
        # Last: an epoch is backed up only once its evaluation and history row are written.
        EpochBackup(checkpoint_dir / "backup"),
    ]
    model.fit(train_ds, epochs=config.epochs, callbacks=callbacks, verbose=verbose)

    if nan_guard.failure is not None:
        failure = {**nan_guard.failure, "run": config.run_name, "config": config.to_dict()}
        results.write_json(run_dir / results.FAILED, failure)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # a retry must not resume from diverged weights
        raise RunFailed(f"{config.run_name}: {failure['reason']} at epoch {failure['epoch'] + 1}")

    history = results.read_csv(run_dir / results.HISTORY)
    best_epoch = None
    if recipe.selects_best_epoch():
        state_path = checkpoint_dir / "best_epoch.json"
        best_epoch = results.read_json(state_path)["best_epoch"] if state_path.exists() else None
        evaluation = EpochEvaluation(data, eval_train_size=config.eval_train_size, train_batch_size=config.batch_size)
        evaluation.set_model(model)  # best weights were restored at train end
        final_eval = evaluation.evaluate()
    else:
        final_eval = {k: v for k, v in history[-1].items() if k.startswith(FINAL_METRIC_PREFIXES)}
    save_final_weights(model, run_dir / results.WEIGHTS)
    write_predictions(model, data, run_dir / results.PREDICTIONS, exact_predictions)
    final = _summary(config, history, final_eval, task, clock.seconds, data, best_epoch)
    final["warnings"] = warnings
    final["processes"] = clock.processes
    final.update(recipe.summary(context))
    final["trainings"] = recipe.trainings()
    if data_filter:
        final["data_filter"] = data_filter
    results.write_json(run_dir / results.FINAL, final)
    shutil.rmtree(checkpoint_dir / "backup", ignore_errors=True)
    return final


def train_fold(config: RunConfig, fold_dir: Path, fold_data: RunData, verbose: int = 0, print_fn=print,
               wait: bool = True, poll_seconds: float = 60.0) -> dict | None:
    """Trains (or reuses, when finished) one fold run of ``config``'s other methods; returns its predictions.

    The fold's validation set is its held-out examples, so ``val_probs`` are out-of-sample.
    The fold is locked while it trains: if another process or job holds it, this waits for it
    (``wait``) or returns None.
    """
    rest = config.recipe.fold_spec()
    keep = set(methods.default_hparams(rest))
    fold_config = dataclasses.replace(config, method=rest,
                                      hparams={k: v for k, v in config.hparams.items() if k in keep})
    fold_dir = Path(fold_dir)
    owner = results.acquire_run_lock(fold_dir)
    if owner is not None:
        if not wait:
            print_fn(f"  {fold_dir.name}: held by {owner.get('host')} pid {owner.get('pid')}, skipped", flush=True)
            return None
        print_fn(f"  {fold_dir.name}: held by {owner.get('host')} pid {owner.get('pid')}, waiting for it "
                 "(a lock left by a dead job on another host must be removed by hand)", flush=True)
        while owner is not None:
            time.sleep(poll_seconds)
            owner = results.acquire_run_lock(fold_dir)
    try:
        if not (fold_dir / results.FINAL).exists():
            results.remove_stale_temporaries(fold_dir)
            release_memory()
            train(fold_config, fold_dir, data=fold_data, verbose=verbose,
                  print_fn=lambda line, **kwargs: print_fn(f"  {fold_dir.name}: {line}", **kwargs),
                  exact_predictions=("val",))  # the held-out fold's probabilities: the method's input
        return results.read_npz(fold_dir / results.PREDICTIONS)
    finally:
        results.release_run_lock(fold_dir)


def train_folds(config: RunConfig, run_dir: str | Path, folds, paths: DataPaths | None = None,
                data: RunData | None = None, verbose: int = 0, print_fn=print) -> list[int]:
    """Trains only the fold runs ``folds`` (0-based) of ``config``'s data filter, not the run itself.

    For splitting a cleanlab run's K trainings over processes or a job array: a later
    ``train(config, run_dir)`` reuses every finished fold. A fold held by another job is
    skipped. Returns the folds that are finished. Raises ValueError if the run trains no
    folds or a fold number is out of range.
    """
    run_dir = Path(run_dir)
    folds = [int(k) for k in folds]
    try:
        config.recipe.check_folds(folds)
    except ValueError as error:
        raise ValueError(f"{config.run_name}: {error}") from None
    keras.utils.set_random_seed(config.seed)
    data = data if data is not None else prepare(config, paths)
    held_out = config.recipe.fold_held_out(data, config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_json(run_dir / results.CONFIG, config.to_dict())
    finished = []
    for k in folds:
        if train_fold(config, run_dir / results.FOLDS / f"fold{k}", make_fold_data(data, held_out[k]), verbose,
                      print_fn, wait=False) is not None:
            finished.append(k)
    return finished


def release_memory() -> None:
    """Frees the graphs and models of finished runs (a long grid must hold steady memory)."""
    keras.backend.clear_session()
    gc.collect()


def save_final_weights(model, path: str | Path) -> None:
    """Writes a finished model's weights, without the optimizer's state, in one step (no half-written file).

    A finished run is loaded, never resumed (its checkpoints resume it), so Adam's two moment estimates would
    only triple the file (ResNet20: 3.5 MB with them, 1.3 MB without); ``load_weights`` reads either.
    """
    def write(tmp: str) -> None:
        model.save_weights(tmp)  # tf_keras picks its format from the ".weights.h5" suffix
        strip_optimizer_state(tmp)

    results.atomic_write(Path(path), write, suffix=".weights.h5")


def strip_optimizer_state(path: str | Path) -> bool:
    """Rewrites a ``.weights.h5`` file without its ``optimizer`` group; returns whether it had one."""
    path = Path(path)
    with h5py.File(path, "r") as source:
        if "optimizer" not in source:
            return False

    def write(tmp: str) -> None:
        with h5py.File(path, "r") as source, h5py.File(tmp, "w") as target:
            target.attrs.update(source.attrs)
            for key in source:
                if key != "optimizer":
                    source.copy(source[key], target, name=key)

    results.atomic_write(path, write, suffix=".h5")
    return True


def load_trained_model(run_dir: str | Path):
    """Rebuilds a finished run's model from its config and loads its final weights.

    Returns ``(model, config, final)``. Weights are read with ``load_weights``
    into a model built by this code, so no code is deserialized from the file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    if not (run_dir / results.FINAL).exists():
        state = results.run_state(run_dir)
        raise ValueError(f"{run_dir} is not a finished run (state: {state}; no {results.FINAL})")
    if not (run_dir / results.WEIGHTS).exists():
        raise FileNotFoundError(
            f"{run_dir / results.WEIGHTS} is missing: weights are not committed; re-run the training to get them"
        )
    config = RunConfig.from_dict(results.read_json(run_dir / results.CONFIG))
    final = results.read_json(run_dir / results.FINAL)
    model = build_run_model(config, final["input_shape"], final["num_outputs"])
    model.load_weights(run_dir / results.WEIGHTS)
    return model, config, final

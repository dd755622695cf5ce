"""Callbacks of the training loop: per-epoch evaluation, history, best epoch, progress, and the epoch
backups a killed run resumes from (:class:`EpochBackup`, :func:`check_backups`)."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np

from tfq_noise import keras, results


def predict_logits(model, images: np.ndarray, mean, std, batch_size: int = 512) -> np.ndarray:
    from tfq_noise.data.pipeline import make_dataset

    labels = np.zeros(len(images), np.int64)
    dataset = make_dataset(images, labels, batch_size, training=False, mean=mean, std=std, cache=False)
    return model.predict(dataset.map(lambda x, y: x), verbose=0)


def training_mode_logits(model, images: np.ndarray, mean, std, batch_size: int, call=None) -> np.ndarray:
    """Logits of ``model(x, training=True)`` (BatchNorm on batch statistics, dropout on, activation ranges
    from the batch), in batches of ``batch_size`` as in training, without changing the model.

    Every non-trainable variable (BatchNorm moving statistics, quantizer ranges, pruning masks) is
    restored afterwards, so the measurement leaves no trace on the model being trained.
    """
    import tensorflow as tf

    from tfq_noise.data.pipeline import make_dataset

    labels = np.zeros(len(images), np.int64)
    dataset = make_dataset(images, labels, batch_size, training=False, mean=mean, std=std, cache=False)
    call = call or tf.function(lambda x: model(x, training=True))
    state = [v.numpy() for v in model.non_trainable_weights]
    try:
        return np.concatenate([np.asarray(call(x), np.float32) for x, _ in dataset])
    finally:
        for variable, value in zip(model.non_trainable_weights, state):
            variable.assign(value)


class EpochEvaluation(keras.callbacks.Callback):
    """Adds clean test metrics, validation metrics and memorization to each epoch's logs.

    Memorization is measured on a fixed subset of the training images twice: in inference mode (what
    the deployed model does) and in training mode (``trainmode_*``: what the loss sees, BatchNorm on
    batch statistics). ``mode_gap`` is training-mode minus inference-mode accuracy on the noisy labels
    of the same images: large when BatchNorm's moving statistics have not settled.
    """

    def __init__(self, data, batch_size: int = 512, eval_train_size: int = 10_000, train_batch_size: int = 128):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.train_batch_size = train_batch_size
        n = len(data.train_images)
        # A fixed subset of the training set: scoring all of it every epoch costs too much.
        order = np.random.default_rng(0).permutation(n)[: min(n, eval_train_size) if eval_train_size else 0]
        self.train_subset = np.sort(order)
        self._training_call = None

    def set_model(self, model):
        super().set_model(model)
        self._training_call = None

    def _logits(self, images):
        return predict_logits(self.model, images, self.data.mean, self.data.std, self.batch_size)

    def _training_mode_logits(self, images):
        import tensorflow as tf

        if self._training_call is None:
            model = self.model
            self._training_call = tf.function(lambda x: model(x, training=True))
        return training_mode_logits(self.model, images, self.data.mean, self.data.std, self.train_batch_size,
                                    self._training_call)

    def evaluate(self) -> dict:
        data, task = self.data, self.data.task
        out = task.score(self._logits(data.test_images), data.test_labels, "test_", data.test_weights)
        if len(data.val_images):
            out.update(task.score(self._logits(data.val_images), data.val_labels, "val_", data.val_weights))
        if len(self.train_subset):
            s = self.train_subset
            images, labels = data.train_images[s], data.train_labels[s]
            out.update(task.memorization(self._logits(images), labels, data.train_clean_labels[s],
                                         data.train_corrupted[s]))
            in_training_mode = task.memorization(self._training_mode_logits(images), labels,
                                                 data.train_clean_labels[s], data.train_corrupted[s])
            out.update({f"trainmode_{k}": v for k, v in in_training_mode.items()})
            out["mode_gap"] = out["trainmode_train_noisy_accuracy"] - out["train_noisy_accuracy"]
        return out

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.evaluate())


class HistoryWriter(keras.callbacks.Callback):
    """Rewrites ``history.csv`` atomically each epoch; on resume, drops epochs that will be redone."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        if not self.rows or self.rows[-1]["epoch"] >= epoch:
            self.rows = [r for r in results.read_csv(self.path) if r["epoch"] < epoch]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "epoch_seconds": round(time.time() - self._epoch_start, 2)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.rows.append(row)
        results.write_csv(self.path, self.rows)


class BestEpochKeeper(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the highest ``monitor``; optionally stops after ``patience``.

    Its state lives in ``checkpoint_dir`` so a resumed run continues the same
    comparison. At the end of training the best weights are restored. Epochs
    before ``start_epoch`` are neither kept nor counted (e.g. before pruning).
    """

    def __init__(self, checkpoint_dir: Path, monitor: str, patience: int | None = None,
                 min_delta: float = 0.0, stop: bool = False, start_epoch: int = 0):
        super().__init__()
        self.start_epoch = start_epoch
        self.dir = Path(checkpoint_dir)
        self.monitor, self.patience, self.min_delta, self.stop = monitor, patience, min_delta, stop
        self.state_path = self.dir / "best_epoch.json"
        self.weights_path = self.dir / "best.weights.h5"
        self.state = {"best": -math.inf, "best_epoch": None, "wait": 0}

    def on_train_begin(self, logs=None):
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        if epoch <= self.state.get("last_epoch", -1):
            # Redone after a restart that lost the backup of this epoch: don't count it twice.
            self.state["wait"] = max(0, self.state["wait"] - 1)
        self.state["last_epoch"] = epoch
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"early stopping monitors {self.monitor!r}, which this epoch's logs lack")
        if value > self.state["best"] + self.min_delta:
            self.state.update(best=float(value), best_epoch=epoch, wait=0)
            self.dir.mkdir(parents=True, exist_ok=True)
            self.model.save_weights(self.weights_path)
        else:
            self.state["wait"] += 1
        results.write_json(self.state_path, self.state)
        if self.stop and self.patience is not None and self.state["wait"] >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.weights_path.exists():
            self.model.load_weights(self.weights_path)


class NanGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss, or at the end of an epoch whose mean loss has diverged.

    Diverged: the epoch's mean training loss is more than ``divergence_factor`` times the loss of the
    first batch (about ln C for a fresh classifier; on resume, the first epoch's mean from ``history``).
    Training on noisy labels lowers the loss, whatever the noise; a loss that grows tenfold is a learning
    rate or a setting gone wrong, and its "result" would be chance accuracy recorded as a finished run.
    """

    def __init__(self, divergence_factor: float = 10.0, reference_loss: float | None = None):
        super().__init__()
        self.failure = None
        self._epoch = 0
        self.divergence_factor = divergence_factor
        self.reference_loss = reference_loss

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not np.isfinite(loss):
            self.failure = {"reason": "non-finite loss", "loss": float(loss), "epoch": self._epoch, "batch": batch}
            self.model.stop_training = True
        elif self.reference_loss is None:
            self.reference_loss = float(loss)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.failure is None and loss is not None and np.isfinite(loss) and self.reference_loss \
                and loss > self.divergence_factor * self.reference_loss:
            self.failure = {"reason": f"diverged (mean loss {loss:.4g} is over {self.divergence_factor:g}× the "
                                      f"first batch's {self.reference_loss:.4g}; lower the learning rate)",
                            "loss": float(loss), "epoch": epoch, "batch": None}
            self.model.stop_training = True


class ProgressPrinter(keras.callbacks.Callback):
    """One line per epoch with the metrics that matter for noisy labels."""

    KEYS = ("loss", "accuracy", "test_accuracy", "test_average_f1", "val_accuracy", "val_average_f1",
            "memorized", "corrected")

    def __init__(self, label: str, epochs: int, print_fn=print):
        super().__init__()
        self.label, self.epochs, self.print_fn = label, epochs, print_fn
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        parts = [f"{k}={logs[k]:.4f}" for k in self.KEYS if logs and k in logs]
        self.print_fn(f"[{self.label}] epoch {epoch + 1}/{self.epochs} ({time.time() - self._start:.0f}s) "
                      + " ".join(parts), flush=True)


class WallClock(keras.callbacks.Callback):
    """Wall-clock seconds a run has taken, summed over the processes that trained it.

    A resumed run would otherwise count only its last process. The total so far is saved in
    ``path`` (under the run's checkpoints) at every epoch end and whenever ``save`` is called, e.g.
    after each fold run of a data filter; time a killed process spent after its last save is lost,
    as is the work it did then.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self._start = time.time()
        earlier = results.read_json(self.path) if self.path.exists() else {}
        self._earlier = float(earlier.get("seconds", 0.0))
        self.processes = int(earlier.get("processes", 0)) + 1

    @property
    def seconds(self) -> float:
        return self._earlier + time.time() - self._start

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        results.write_json(self.path, {"seconds": round(self.seconds, 1), "processes": self.processes})

    def on_epoch_end(self, epoch, logs=None):
        self.save()


# The epoch backups kept: the last is the one resumed from, the one before it the fallback if the last is damaged.
BACKUPS_KEPT = 2
BACKUP_STATE = "checkpoint"  # TensorFlow's list of a folder's checkpoints


class EpochBackup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore keeping the last :data:`BACKUPS_KEPT` epochs' checkpoints (Keras keeps one)."""

    def __init__(self, backup_dir: Path):
        super().__init__(str(backup_dir), delete_checkpoint=False)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for manager in {id(m): m for m in (self._training_state.read_checkpoint_manager,
                                           self._training_state.write_checkpoint_manager)}.values():
            manager._max_to_keep = BACKUPS_KEPT  # read when a save sweeps the older checkpoints


def backup_folder(backup_dir: Path) -> Path:
    """Where :class:`EpochBackup` writes its checkpoints (Keras's chief-worker sub-folder)."""
    return Path(backup_dir) / "chief"


def _checkpoint_problem(prefix: Path) -> tuple[str | None, int | None]:
    """(why the checkpoint at ``prefix`` cannot be restored or None, the epoch it holds)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        epoch = None
        for name in reader.get_variable_to_dtype_map():
            value = reader.get_tensor(name)  # reads every byte: a cut data file fails here
            if name.startswith("ckpt_saved_epoch/"):
                epoch = int(value)
        return (None, epoch) if epoch is not None else ("it records no epoch", None)
    except Exception as error:  # noqa: BLE001  (DataLossError, NotFoundError, OutOfRangeError...: unusable)
        return " ".join(f"{type(error).__name__}: {error}".split())[:300], None


def check_backups(backup_dir: Path) -> tuple[int | None, list[str]]:
    """Keeps only restorable epoch backups under ``backup_dir``; returns (the epoch a resumed run continues
    after, or None to start from scratch; what was wrong, one line each).

    Every checkpoint is read in full, newest first; a damaged one (cut by a full disk or a kill, "not an
    sstable") is named and deleted, and TensorFlow's list of checkpoints is rewritten to the good ones, so
    the run resumes from the last good epoch. Without a good one the backups are removed.
    """
    folder = backup_folder(backup_dir)
    if not folder.is_dir():
        return None, []
    for leftover in folder.glob("*_temp*"):  # a save interrupted before TensorFlow merged its files
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    numbers = sorted({int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"ckpt-(\d+)\..*", p.name))},
                     reverse=True)
    good, notes = [], []
    for number in numbers:
        prefix = folder / f"ckpt-{number}"
        problem, epoch = _checkpoint_problem(prefix)
        if problem is None and len(good) < BACKUPS_KEPT:
            good.append((number, epoch))
            continue
        if problem is not None:
            notes.append(f"checkpoint {prefix} is damaged ({problem}): removed")
        for path in folder.glob(f"ckpt-{number}.*"):
            path.unlink(missing_ok=True)
    if not good:
        shutil.rmtree(backup_dir, ignore_errors=True)
        return None, notes
    # TensorFlow's CheckpointState text: the newest good one is restored; all are swept by later saves.
    names, now = [f"ckpt-{n}" for n, _ in sorted(good)], time.time()
    results.atomic_write_text(folder / BACKUP_STATE, "\n".join(
        [f'model_checkpoint_path: "{names[-1]}"', *(f'all_model_checkpoint_paths: "{n}"' for n in names),
         *(f"all_model_checkpoint_timestamps: {now}" for _ in names), f"last_preserved_timestamp: {now - 1}"]) + "\n")
    return good[0][1], notes

"""What a task predicts and how it is scored: single-label classification or multi-label detection.

A task gives the loss, the metrics Keras shows while fitting, and the
per-epoch evaluation on held-out data (clean test accuracy or per-task F1) and
on the noisy training labels (how much of the noise the network memorized).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfq_noise import keras


def smoothed_sparse_categorical_crossentropy(num_classes: int, label_smoothing: float):
    """Cross-entropy against (1 − α)·onehot(y) + α/C, from logits and integer labels."""

    def loss(y_true, logits):
        onehot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes, dtype=logits.dtype)
        targets = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
        return tf.nn.softmax_cross_entropy_with_logits(targets, logits)

    loss.__name__ = "smoothed_sparse_categorical_crossentropy"
    return loss


def soft_target_crossentropy(num_classes: int, label_smoothing: float = 0.0):
    """Cross-entropy against target distributions [B, C] (e.g. mixup's), smoothed to (1 − α)·t + α/C."""

    def loss(y_true, logits):
        logits = tf.cast(logits, tf.float32)
        targets = tf.reshape(tf.cast(y_true, tf.float32), [-1, num_classes])
        if label_smoothing > 0:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
        return tf.nn.softmax_cross_entropy_with_logits(targets, logits)

    loss.__name__ = "soft_target_crossentropy"
    return loss


def soft_target_fit_metrics(task) -> list:
    """The fit accuracy when training targets are soft (mixup): against each target's dominant class,
    or, per label of a multi-label task, against target > 0.5 at the task's decision threshold
    (per entry, so that [B, K] sample weights apply)."""
    if not task.multilabel:
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    logit_threshold = float(np.log(task.threshold / (1.0 - task.threshold)))

    def entry_accuracy(y_true, logits):
        present = tf.cast(y_true, tf.float32) > 0.5
        return tf.cast(tf.equal(present, tf.cast(logits, tf.float32) > logit_threshold), tf.float32)

    return [keras.metrics.MeanMetricWrapper(entry_accuracy, name="accuracy")]


def memorization_metrics(predicted, noisy_labels, clean_labels, corrupted) -> dict:
    """Accuracy on the noisy and clean training labels; for the corrupted entries, the share
    predicted as their wrong label (``memorized``) and as their true label (``corrected``)."""
    predicted, noisy, clean = np.asarray(predicted), np.asarray(noisy_labels), np.asarray(clean_labels)
    corrupted = np.asarray(corrupted, bool)
    out = {
        "train_noisy_accuracy": float(np.mean(predicted == noisy)),
        "train_clean_accuracy": float(np.mean(predicted == clean)),
    }
    if corrupted.any():
        out["memorized"] = float(np.mean(predicted[corrupted] == noisy[corrupted]))
        out["corrected"] = float(np.mean(predicted[corrupted] == clean[corrupted]))
    return out


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-column binary F1 = 2TP / (2TP + FP + FN); entries with mask 0 are ignored; 0 when undefined."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    weight = np.ones(y_true.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    tp = np.sum(y_true & y_pred & weight, axis=0)
    fp = np.sum(~y_true & y_pred & weight, axis=0)
    fn = np.sum(y_true & ~y_pred & weight, axis=0)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


class ClassificationTask:
    """One label out of ``num_classes``; the model outputs logits."""

    multilabel = False
    validation_metric = "val_accuracy"
    headline_metric = "test_accuracy"

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def loss(self, label_smoothing: float = 0.0, soft_targets: bool = False):
        """Cross-entropy from logits against class ids, or against target distributions [B, C]."""
        if soft_targets:
            return soft_target_crossentropy(self.num_classes, label_smoothing)
        if label_smoothing > 0:
            return smoothed_sparse_categorical_crossentropy(self.num_classes, label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def fit_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    @staticmethod
    def predict_labels(logits: np.ndarray) -> np.ndarray:
        return np.argmax(logits, axis=-1)

    def score(self, logits, labels, prefix: str, mask=None) -> dict:
        logits = np.asarray(logits, np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        labels = np.asarray(labels).astype(np.int64)
        return {f"{prefix}accuracy": float(np.mean(self.predict_labels(logits) == labels)),
                f"{prefix}loss": float(-np.mean(log_probs[np.arange(len(labels)), labels]))}

    def memorization(self, logits, noisy_labels, clean_labels, corrupted) -> dict:
        return memorization_metrics(self.predict_labels(logits), noisy_labels, clean_labels, corrupted)


class MultiLabelTask:
    """Several binary labels (e.g. action units); the model outputs one logit per task."""

    multilabel = True
    validation_metric = "val_average_f1"
    headline_metric = "test_average_f1"

    def __init__(self, task_names: list[str], threshold: float = 0.5):
        self.task_names = list(task_names)
        self.num_classes = len(task_names)
        self.threshold = threshold

    def loss(self, label_smoothing: float = 0.0):
        # Keras' binary label smoothing is y·(1 − α) + α/2: the paper's eq. 1 with C = 2.
        return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def fit_metrics(self):
        return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]

    def predict_labels(self, logits):
        probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
        return probabilities > self.threshold  # a logit of exactly 0 (p = 0.5) is not a detection

    def score(self, logits, labels, prefix: str, mask=None) -> dict:
        predicted = self.predict_labels(logits)
        f1 = f1_scores(labels, predicted, mask)
        known = np.ones(predicted.shape, bool) if mask is None else np.asarray(mask).astype(bool)
        correct = (predicted == np.asarray(labels).astype(bool)) & known
        z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
        # Binary cross-entropy from logits, stable form, over the known labels.
        bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        out = {f"{prefix}average_f1": float(np.mean(f1)),
               f"{prefix}accuracy": float(correct.sum() / max(known.sum(), 1)),
               f"{prefix}loss": float((bce * known).sum() / max(known.sum(), 1))}
        out.update({f"{prefix}f1_{name}": float(v) for name, v in zip(self.task_names, f1)})
        return out

    def memorization(self, logits, noisy_labels, clean_labels, corrupted) -> dict:
        return memorization_metrics(self.predict_labels(logits), np.asarray(noisy_labels).astype(bool),
                                    np.asarray(clean_labels).astype(bool), corrupted)


class MaskedMultiLabelTask(MultiLabelTask):
    """A :class:`MultiLabelTask` whose loss and fit metric accept per-label sample weights [B, T].

    Keras' ``BinaryCrossentropy`` averages over the tasks before weighting, so a
    [B, T] weight (BP4D's known-label mask) cannot be applied to it. Here the loss
    is the per-entry sigmoid cross-entropy [B, T] (with the paper's label-wise
    smoothing, C = 2); Keras multiplies it by the weights and averages over all
    B·T entries, so unknown labels add nothing.
    """

    def loss(self, label_smoothing: float = 0.0):
        smoothing = float(label_smoothing)

        def masked_binary_crossentropy(y_true, logits):
            targets = tf.cast(y_true, logits.dtype)
            if smoothing > 0:
                targets = targets * (1.0 - smoothing) + 0.5 * smoothing
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)

        return masked_binary_crossentropy

    def fit_metrics(self):
        logit_threshold = float(np.log(self.threshold / (1.0 - self.threshold)))

        def entry_accuracy(y_true, logits):
            return tf.cast(tf.equal(tf.cast(y_true, tf.float32) > 0.5, logits >= logit_threshold), tf.float32)

        return [keras.metrics.MeanMetricWrapper(entry_accuracy, name="accuracy")]


"""Confident learning (Northcutt et al. 2021) as a method: ``cleanlab``.

The ``CleanLearning`` recipe of the ``cleanlab`` library, run through this
project's training loop:

1. split the training set into K stratified folds (K = 5, cleanlab's default);
2. train K models, each on K-1 folds, with the run's other methods
   (``cleanlab+quantization``: W4/A4 fold models), and predict the held-out
   fold: out-of-sample class probabilities for every training example;
3. ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by=...)``
   flags the examples whose given label is likely wrong;
4. drop them and train the run's model on the rest.

Its K fold trainings are part of its cost: the run's ``wall_seconds`` counts
them and ``final.json`` records ``trainings`` (K + 1). The fold runs live in
``<run>/folds/fold<k>/`` (they resume like any run). A fold run holds a
lock while it trains, so other processes or jobs can train folds at the same
time (``experiments.run --only_folds``); a run that reaches a fold held by
another job waits for it. ``final.json``'s
``data_filter`` gives how many examples were dropped and, where the wrong
labels are known (synthetic noise, CIFAR-10N), the precision and recall of
the flags. Memorization metrics of the final model are measured on the kept
examples only.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from tfq_noise.methods.base import Method, _check_range

# cleanlab.filter.find_label_issues's filter_by choices (cleanlab 2.9).
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out positions of each of ``folds`` stratified folds (scikit-learn's StratifiedKFold, shuffled)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    smallest = int(np.bincount(labels).min(initial=len(labels)) if len(labels) else 0)
    if len(labels) < folds:
        raise ValueError(f"cleanlab: {len(labels)} training examples cannot make {folds} folds")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if smallest < folds:  # a class too rare to stratify: plain shuffled folds
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(part) for part in np.array_split(order, folds)]
    return [np.sort(held) for _, held in splitter.split(np.zeros(len(labels)), labels)]


def fold_data(data, held_out: np.ndarray):
    """The run's data for one fold: trained on the other folds, validated (predicted) on ``held_out``."""
    keep = np.ones(len(data.train_images), bool)
    keep[held_out] = False

    def part(array, mask):
        return None if array is None else np.asarray(array)[mask]

    return dataclasses.replace(
        data,
        train_images=data.train_images[keep], train_labels=data.train_labels[keep],
        train_clean_labels=data.train_clean_labels[keep], train_corrupted=data.train_corrupted[keep],
        train_weights=part(data.train_weights, keep), train_index=part(data.train_index, keep),
        val_images=data.train_images[held_out], val_labels=data.train_labels[held_out],
        val_weights=part(data.train_weights, held_out), val_index=part(data.train_index, held_out),
    )


def kept_data(data, keep: np.ndarray, info: Mapping):
    """The run's data with only the ``keep`` training examples (boolean mask)."""
    def part(array):
        return None if array is None else np.asarray(array)[keep]

    return dataclasses.replace(
        data,
        train_images=data.train_images[keep], train_labels=data.train_labels[keep],
        train_clean_labels=data.train_clean_labels[keep], train_corrupted=data.train_corrupted[keep],
        train_weights=part(data.train_weights), train_index=part(data.train_index),
        info={**data.info, "cleanlab": dict(info), "train_examples": int(keep.sum())},
    )


def flag_quality(flagged: np.ndarray, corrupted: np.ndarray) -> dict:
    """Precision, recall and F1 of the flagged set against the known wrong labels."""
    flagged, corrupted = np.asarray(flagged, bool), np.asarray(corrupted, bool)
    hits = int(np.sum(flagged & corrupted))
    precision = hits / flagged.sum() if flagged.sum() else None
    recall = hits / corrupted.sum() if corrupted.sum() else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    return {"precision": precision, "recall": recall, "f1": f1}


class ConfidentLearning(Method):
    name = "cleanlab"
    filters_data = True
    defaults = {"cleanlab_folds": 5, "cleanlab_filter_by": "prune_by_noise_rate"}
    description = ("confident learning: K-fold out-of-sample probabilities, cleanlab's find_label_issues, "
                   "retrain without the flagged examples (K + 1 trainings)")

    def check(self, hp) -> None:
        _check_range(hp, "cleanlab_folds", 2, 20, integer=True)
        if hp["cleanlab_filter_by"] not in FILTERS:
            raise ValueError(f"cleanlab_filter_by must be one of {FILTERS}, got {hp['cleanlab_filter_by']!r}")

    def trainings(self, hp) -> int:
        return self.fold_count(hp) + 1

    def fold_count(self, hp) -> int:
        return int(hp["cleanlab_folds"])

    def fold_held_out(self, hp, data, seed: int) -> list[np.ndarray]:
        return fold_indices(np.asarray(data.train_labels, np.int64), self.fold_count(hp), seed)

    def filter_training_data(self, hp, data, seed: int, fit_fold: Callable[[str, object], Mapping]):
        """Drops the training examples cleanlab flags; returns ``(data, info)``.

        ``fit_fold(name, fold_data)`` trains one fold run and returns its predictions
        (the arrays of ``predictions.npz``; ``val_probs`` are the held-out fold's).
        """
        import cleanlab
        import cleanlab.filter

        if data.task.multilabel:
            raise ValueError("cleanlab: the method takes single-label data (one class per example); "
                             f"this dataset's task is multi-label")
        folds = int(hp["cleanlab_folds"])
        labels = np.asarray(data.train_labels, np.int64)
        num_classes = int(data.task.num_classes)
        pred_probs = np.full((len(labels), num_classes), np.nan)
        for k, held_out in enumerate(self.fold_held_out(hp, data, seed)):
            predictions = fit_fold(f"fold{k}", fold_data(data, held_out))
            probs = np.asarray(predictions["val_probs"], np.float64)
            if probs.shape != (len(held_out), num_classes):
                raise ValueError(f"cleanlab: fold {k} predicted {probs.shape}, expected {(len(held_out), num_classes)}")
            pred_probs[held_out] = probs / probs.sum(axis=1, keepdims=True)  # float16 rows, renormalized
        flagged = np.zeros(len(labels), bool)
        issues = cleanlab.filter.find_label_issues(labels, pred_probs, filter_by=hp["cleanlab_filter_by"])
        flagged[np.asarray(issues, bool)] = True
        if flagged.all():
            raise ValueError("cleanlab flagged every training example: nothing left to train on")
        info = {"cleanlab_version": cleanlab.__version__, "folds": folds, "filter_by": hp["cleanlab_filter_by"],
                "flagged": int(flagged.sum()), "flagged_share": float(flagged.mean()),
                "kept": int((~flagged).sum()),
                "out_of_sample_accuracy": float(np.mean(pred_probs.argmax(1) == labels))}
        corrupted = np.asarray(data.train_corrupted, bool)
        if corrupted.shape == flagged.shape:
            info.update(flag_quality(flagged, corrupted))
            info["wrong_labels_kept"] = int(np.sum(corrupted & ~flagged))
        return kept_data(data, ~flagged, info), info

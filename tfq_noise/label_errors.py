"""Finds likely label errors from a model's predicted probabilities (confident learning, with cleanlab).

    from tfq_noise.label_errors import find_label_errors

    found = find_label_errors(labels, pred_probs)            # labels [N] ints, pred_probs [N, C]
    found.indices[:10]                                       # the 10 most suspect examples (rows)
    found.table(class_names=names, ids=paths)[:10]           # rows a person can act on

``pred_probs`` should be out-of-sample (cross-validated, or of examples held out of training): a model's
probabilities on its own training examples fit the labels it was fitted on, memorized errors included.

The examples flagged are those of ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by=...,
return_indices_ranked_by="self_confidence")``. They are ranked by ``score = 1 - p(given label)``, the
model's probability that the given label is wrong (highest first: the order of cleanlab's self-confidence
ranking), and each gets a ``suggested_label``: the class the model finds most likely.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")
PROB_TOLERANCE = 0.02  # float16 rows sum to 1 within rounding

__all__ = ["FILTERS", "LabelErrors", "average_precision", "check_inputs", "find_label_errors", "flag_metrics",
           "folder_run_files"]


@dataclasses.dataclass(frozen=True)
class LabelErrors:
    """The flagged examples, most suspect first, and every example's scores.

    ``indices``, ``given_label``, ``suggested_label`` and ``score`` hold the flagged examples only, in rank
    order (``indices`` are rows of the ``labels`` / ``pred_probs`` given). The per-row arrays let a caller
    rank the rest too: ``order`` lists every row, the flagged ones first (as in ``indices``), then the others
    by score.
    """

    indices: np.ndarray  # int64 [F]: flagged rows, most suspect first
    given_label: np.ndarray  # int64 [F]
    suggested_label: np.ndarray  # int64 [F]: argmax of pred_probs
    score: np.ndarray  # float64 [F]: 1 - p(given label)
    order: np.ndarray  # int64 [N]: every row, flagged first
    is_flagged: np.ndarray  # bool [N]
    labels: np.ndarray  # int64 [N]: the given labels
    p_given: np.ndarray  # float64 [N]: p(given label)
    predicted: np.ndarray  # int64 [N]: argmax of pred_probs
    filter_by: str
    cleanlab_version: str

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def scores(self) -> np.ndarray:
        """``1 - p(given label)`` of every row (float64 [N])."""
        return 1.0 - self.p_given

    @property
    def rank(self) -> np.ndarray:
        """Every row's 1-based position among the flagged examples, 0 where not flagged (int64 [N])."""
        out = np.zeros(len(self.is_flagged), np.int64)
        out[self.indices] = np.arange(1, len(self.indices) + 1)
        return out

    def table(self, class_names: Sequence[str] | None = None, ids: Sequence[Any] | None = None,
              flagged_only: bool = True) -> list[dict]:
        """One dict per example, most suspect first: ``rank``, ``row`` (and ``id``: ``ids[row]``), the given and
        the suggested label (and their names, with ``class_names``), ``score`` and ``flagged``."""
        out = []
        for rank, j in enumerate((self.indices if flagged_only else self.order).tolist(), 1):
            given, suggested = int(self.labels[j]), int(self.predicted[j])
            row: dict[str, Any] = {"rank": rank, "row": j}
            if ids is not None:
                row["id"] = ids[j]
            row.update(given_label=given, suggested_label=suggested)
            if class_names is not None:
                row.update(given_class=class_names[given], suggested_class=class_names[suggested])
            row.update(score=float(1.0 - self.p_given[j]), flagged=bool(self.is_flagged[j]))
            out.append(row)
        return out


def check_inputs(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int64 [N] and ``pred_probs`` as float64 [N, C] rows summing to 1; ValueError saying what is
    wrong otherwise."""
    labels = np.asarray(labels)
    probs = np.asarray(pred_probs)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2 or probs.dtype.kind not in "fiu":
        raise ValueError(f"pred_probs must be numbers [N, C] with N >= 1 and C >= 2, got {probs.dtype} {probs.shape}")
    if labels.ndim != 1 or len(labels) != len(probs):
        raise ValueError(f"labels must be one class per example, shape ({len(probs)},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, not {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}, got {labels.min()}..{labels.max()}")
    probs = probs.astype(np.float64)
    sums = probs.sum(axis=1)
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or np.max(np.abs(sums - 1)) > PROB_TOLERANCE:
        raise ValueError("pred_probs are not class probabilities (finite, >= 0, each row summing to 1): pass "
                         "softmax outputs, not logits")
    if np.max(np.abs(sums - 1)) > 1e-12:  # rows already summing to 1 are kept bit for bit
        probs = probs / sums[:, None]
    return labels.astype(np.int64), probs


def find_label_errors(labels, pred_probs, *, filter_by: str = "prune_by_noise_rate",
                      ties: Sequence[int] | None = None) -> LabelErrors:
    """The examples whose given label is likely wrong (see the module docstring).

    ``labels``: int [N], the given labels; ``pred_probs``: [N, C] class probabilities (out-of-sample ones
    are best); ``filter_by``: cleanlab's rule (one of :data:`FILTERS`; its default ``prune_by_noise_rate``).
    ``ties``: a key per row that orders the unflagged rows of equal score (default: the row).
    Raises ValueError for inputs that are not labels and probabilities, or that cleanlab refuses.
    """
    import cleanlab
    import cleanlab.filter

    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter_by {filter_by!r}; choose one of {', '.join(FILTERS)}")
    labels, probs = check_inputs(labels, pred_probs)
    rows = np.arange(len(labels))
    p_given = probs[rows, labels]
    predicted = probs.argmax(axis=1).astype(np.int64)
    try:
        ranked = np.asarray(cleanlab.filter.find_label_issues(
            labels, probs, return_indices_ranked_by="self_confidence", filter_by=filter_by, n_jobs=1), dtype=np.int64)
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(f"cleanlab.filter.find_label_issues refused the data: {error}") from None
    flagged = np.zeros(len(rows), bool)
    flagged[ranked] = True
    key = rows if ties is None else np.asarray(ties)
    by_score = np.lexsort((key, -(1.0 - p_given)))  # highest score first, ties by key
    order = np.concatenate([ranked, by_score[~flagged[by_score]]])
    return LabelErrors(indices=ranked, given_label=labels[ranked], suggested_label=predicted[ranked],
                       score=1.0 - p_given[ranked], order=order, is_flagged=flagged, labels=labels,
                       p_given=p_given, predicted=predicted, filter_by=filter_by,
                       cleanlab_version=cleanlab.__version__)


def flag_metrics(flagged: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of a flagged set against the truly mislabeled examples (None where undefined)."""
    flagged, truth = np.asarray(flagged, bool), np.asarray(truth, bool)
    hits = int(np.sum(flagged & truth))
    precision = hits / int(flagged.sum()) if flagged.any() else None
    recall = hits / int(truth.sum()) if truth.any() else None
    f1 = None if precision is None or recall is None else (
        0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return {"flagged": int(flagged.sum()), "true_positives": hits, "precision": precision, "recall": recall, "f1": f1}


def average_precision(score: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the precision-recall curve of ``score`` (higher: more suspect); None without positives."""
    from sklearn.metrics import average_precision_score

    truth = np.asarray(truth, bool)
    return float(average_precision_score(truth, score)) if truth.any() else None


def folder_run_files(dataset_kwargs: Mapping[str, Any], data_info: Mapping[str, Any], index,
                     reference_labels=None, folder_path: str | None = None) -> list[str]:
    """The image file of each training example (``index``: dataset positions, as in a run's ``train_index``) of a
    ``--dataset=folder`` run, from the folder or CSV it trained on.

    ``data_info``: the ``data`` of the run's ``provenance.json`` (its ``source`` names the folder or CSV;
    ``folder_path`` replaces it). The listing and the test split are remade as the run made them
    (:mod:`tfq_noise.data.folder`); ``reference_labels`` (the run's ``train_clean_labels``: the folder's labels
    where it gives no clean ones) must match, so a folder changed since the run is refused, not misread.
    Raises ValueError saying what to pass.
    """
    import os

    from tfq_noise.data import base, folder

    layout, _, recorded = str(data_info.get("source") or "").partition(" ")
    path = folder_path or recorded or os.environ.get(folder.ENV_VAR)
    hint = "pass --folder_path=<the folder or CSV the run trained on>"
    if not path:
        raise ValueError(f"the run does not record where its images are: {hint}")
    if not os.path.exists(path):
        raise ValueError(f"the run's images are not at {path} any more: {hint}")
    listing = folder.list_csv(path) if os.path.isfile(path) else folder.list_folder(path)
    classes = data_info.get("classes")
    if classes and [str(c) for c in listing.class_names] != [str(c) for c in classes]:
        raise ValueError(f"{path} has the classes {listing.class_names}, the run had {list(classes)}: it is not the "
                         f"folder the run trained on; {hint}")
    fraction = {**folder.DEFAULTS, **dict(dataset_kwargs or {})}["test_fraction"]
    reference = listing.labels if listing.clean is None else listing.clean
    test = listing.test if listing.test is not None else base.held_out_test(reference, fraction)
    train = np.flatnonzero(~test)
    index = np.asarray(index, np.int64)
    changed = f"{path} has changed since the run trained on it"
    if len(index) and index.max() >= len(train):
        raise ValueError(f"{changed} (it holds {len(train)} training images, the run used position "
                         f"{int(index.max())}); {hint}")
    if reference_labels is not None:
        differ = int(np.sum(reference[train][index] != np.asarray(reference_labels)))
        if differ:
            raise ValueError(f"{changed} (the labels of {differ} of its {len(index)} examples differ); {hint}")
    return [listing.paths[train[i]] for i in index.tolist()]

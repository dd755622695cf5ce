"""The layout of a run's ``predictions.npz`` (written and read through :mod:`tfq_noise.results`).

Probabilities are stored as 5-bit codes of arcsin(sqrt(p)) (fine near 0 and 1, ±0.025 at p = 0.5), a softmax
row's largest as its class only (1 less the others): about 300 KB for a 45,000 + 5,000-image CIFAR-10 run,
where float16 took 1.2 MB. On the committed real-size runs the predicted class is exact and cleanlab's flags
F1 and average precision move by under 0.001. A split whose probabilities a method reads back (a cleanlab
fold's held-out one) stays float16.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

FORMAT_KEY = "predictions_format"
PROBABILITY_LEVELS = 31


def encode_predictions(arrays: Mapping[str, Any], exact: Iterable[str] = (), softmax: bool = True) -> dict:
    """The arrays of a run's ``predictions.npz``, compact; :func:`decode_predictions` gives back the plain layout.

    ``arrays``: ``<split>_probs`` (float [N, C]), ``<split>_labels``, ``train_clean_labels``, ``train_corrupted``,
    ``<split>_index``. Probabilities of the splits in ``exact`` are kept as float16, the others coded on
    :data:`PROBABILITY_LEVELS` steps; integers take their smallest type, indices are stored as steps, clean labels
    only where they differ (``train_corrupted``). ``softmax``: rows sum to 1 (renormalized when read)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    exact = set(exact)
    out = {FORMAT_KEY: np.array(2, np.uint8), "probability_levels": np.array(PROBABILITY_LEVELS, np.uint8),
           "rows_sum_to_one": np.array(bool(softmax))}
    labels, clean, corrupted = (arrays.get(f"train_{k}") for k in ("labels", "clean_labels", "corrupted"))
    for key, value in arrays.items():
        split = key.rsplit("_", 1)[0]
        if key.endswith("_probs") and split not in exact:
            angle = np.arcsin(np.sqrt(np.clip(value.astype(np.float64), 0.0, 1.0)))
            codes = np.rint(angle * (2 / np.pi) * PROBABILITY_LEVELS).astype(np.uint8)
            if softmax and value.ndim == 2 and value.shape[1] > 1:
                top = value.argmax(axis=1)
                others = np.ones(value.shape, bool)
                others[np.arange(len(value)), top] = False
                out[f"{key}_top"] = _smallest_int(top)
                codes = codes[others].reshape(len(value), value.shape[1] - 1)
            out[f"{key}_codes"] = codes
        elif key.endswith("_probs"):
            out[key] = value.astype(np.float16)
        elif key.endswith("_index") and value.ndim == 1 and value.dtype.kind in "iu":
            out[f"{key}_steps"] = _smallest_int(np.diff(value.astype(np.int64), prepend=0))
        elif (key == "train_clean_labels" and labels is not None and corrupted is not None
              and labels.shape == value.shape == corrupted.shape and np.array_equal(labels != value, corrupted)):
            out["train_clean_labels_where_corrupted"] = _smallest_int(value[corrupted.astype(bool)])
        else:
            out[key] = _smallest_int(value)
    return out


def _smallest_int(value):
    if value.dtype.kind not in "iu" or value.size == 0:
        return value
    return value.astype(np.result_type(np.min_scalar_type(value.min()), np.min_scalar_type(value.max())))


def decode_predictions(arrays: Mapping[str, Any]) -> dict:
    """The plain layout (float16 probabilities, int64 labels and indices) of :func:`encode_predictions`' arrays."""
    levels = float(arrays["probability_levels"])
    out = {}
    for key, value in arrays.items():
        if key in (FORMAT_KEY, "probability_levels", "rows_sum_to_one") or key.endswith("_probs_top"):
            continue
        if key.endswith("_probs_codes"):
            probs = np.sin(value.astype(np.float64) * (np.pi / 2 / levels)) ** 2
            top_key = key.replace("_codes", "_top")
            if top_key in arrays:  # the largest of each row: 1 less the others
                rows, top = np.arange(len(probs)), np.asarray(arrays[top_key]).astype(np.int64)
                others = np.ones((len(probs), probs.shape[1] + 1), bool)
                others[rows, top] = False
                full = np.zeros(others.shape)
                full[others] = probs.ravel()
                full[rows, top] = np.maximum(1.0 - probs.sum(axis=1), probs.max(axis=1, initial=0.0))
                probs = full
            if bool(arrays["rows_sum_to_one"]):
                sums = probs.sum(axis=-1, keepdims=True)
                probs = np.where(sums > 0, probs / np.where(sums > 0, sums, 1), 1.0 / probs.shape[-1])
            probs = probs.astype(np.float16)
            if top_key in arrays:  # the stored class stays the largest (a tie would move argmax)
                rows = np.flatnonzero(probs.argmax(axis=1) != top)
                probs[rows, top[rows]] = np.nextafter(probs[rows].max(axis=1), np.float16(1))
            out[key[: -len("_codes")]] = probs
        elif key.endswith("_index_steps"):
            out[key[: -len("_steps")]] = np.cumsum(value.astype(np.int64))
        elif key == "train_clean_labels_where_corrupted":
            clean = np.asarray(arrays["train_labels"]).astype(np.int64)
            clean[np.asarray(arrays["train_corrupted"], bool)] = value
            out["train_clean_labels"] = clean
        else:
            out[key] = value.astype(np.int64) if value.dtype.kind in "iu" else value
    return out

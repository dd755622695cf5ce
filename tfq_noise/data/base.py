"""What every dataset's preparer returns (:class:`RunData`), where data lives (:class:`DataPaths`),
and the fixed splits and option checks the preparers share.

The choice of images (``train_size`` subset and validation split) depends only on the
dataset, never on the seed or the method, so every run of a grid sees the same images;
the label noise is drawn with the run's seed. This module imports no dataset module
(they import it), so the registry (:mod:`tfq_noise.data.registry`) has no import cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

# Subset and validation split are drawn with this seed, whatever the run's seed.
SPLIT_SEED = 20230101
# A --test_size subset of the test set is drawn with this seed, whatever the run's seed.
TEST_SUBSET_SEED = 20230102


@dataclasses.dataclass
class RunData:
    task: Any
    train_images: np.ndarray
    train_labels: np.ndarray  # what the network is trained on (noisy)
    train_clean_labels: np.ndarray
    train_corrupted: np.ndarray  # bool, per example (or per label entry for multi-label)
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    info: dict  # source, caveat, realized noise rate... (goes into provenance and final.json)
    train_weights: np.ndarray | None = None  # known-label mask (BP4D)
    test_weights: np.ndarray | None = None
    val_weights: np.ndarray | None = None
    train_index: np.ndarray | None = None  # positions of the examples in the dataset's training set
    val_index: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])


@dataclasses.dataclass(frozen=True)
class DataPaths:
    """Where the data lives; not part of a run's identity. Unset fields fall back to env vars / TFDS."""

    cifar10_dir: str | None = None
    tfds_data_dir: str | None = None
    cifar10n_path: str | None = None
    ferplus_dir: str | None = None
    bp4d_dir: str | None = None
    folder_path: str | None = None  # --dataset=folder: an image folder or a CSV


def subset_and_split(n: int, train_size: int, validation_fraction: float):
    """Indices of the training subset, split into (train, validation, subset); fixed for a dataset."""
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(n)
    if train_size:
        if train_size > n:
            raise ValueError(f"train_size={train_size} exceeds the {n} training examples")
        order = order[:train_size]
    n_val = int(round(validation_fraction * len(order)))
    return np.sort(order[n_val:]), np.sort(order[:n_val]), np.sort(order)


def test_subset(data: RunData, size: int) -> RunData:
    """``data`` with its test set cut to a fixed subset of ``size`` examples (same for every run)."""
    n = len(data.test_images)
    if size > n:
        raise ValueError(f"test_size={size} exceeds the {n} test examples")
    keep = np.sort(np.random.default_rng(TEST_SUBSET_SEED).permutation(n)[:size])
    weights = None if data.test_weights is None else data.test_weights[keep]
    info = {**data.info, "test_examples": int(size), "test_subset_of": int(n)}
    return dataclasses.replace(data, test_images=data.test_images[keep], test_labels=data.test_labels[keep],
                               test_weights=weights, info=info)


# --------------------------------------------------------------------- dataset_kwargs checks


def options(config, defaults: Mapping[str, Any]) -> dict:
    """``config.dataset_kwargs`` over ``defaults``; unknown keys raise ValueError."""
    given = dict(config.dataset_kwargs or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown dataset_kwargs {unknown} for {config.dataset}; known: {sorted(defaults)}")
    return {**defaults, **given}


def int_option(values, key, low, high=None) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        bounds = f"in {low}..{high}" if high else f">= {low}"
        raise ValueError(f"dataset_kwargs {key} must be an int {bounds}, got {value!r}")
    return int(value)


def fraction_option(values, key) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"dataset_kwargs {key} must be in (0, 1), got {value!r}")
    return float(value)


def decision_threshold(values) -> float:
    return fraction_option(values, "decision_threshold")


def check_real_noise(config, allowed: tuple[str, ...]) -> None:
    """For data whose label noise is real (no rate to set)."""
    if config.noise_type not in allowed:
        raise ValueError(
            f"{config.dataset}'s label noise is real: noise_type must be {' or '.join(map(repr, allowed))} "
            f"(got {config.noise_type!r})"
        )
    if config.noise_rate != 0:
        raise ValueError(f"{config.dataset} has no noise rate to set: noise_rate must be 0 (got {config.noise_rate})")


def fixed_subset(n: int, size: int, salt: int = 0) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``size`` of ``n`` (all if size is 0)."""
    if size == 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SPLIT_SEED + salt).permutation(n)[:size])


def prevalence(labels, mask=None) -> np.ndarray:
    """Share of positive labels per task (over the known entries where ``mask`` is given)."""
    labels = np.asarray(labels, np.float64)
    mask = np.ones_like(labels) if mask is None else np.asarray(mask, np.float64)
    return (labels * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1)


def held_out_test(labels: np.ndarray, fraction: float) -> np.ndarray:
    """bool [N]: a fixed, per-class share of the examples held out as the test set.

    Each class c with n_c examples gives floor(fraction · n_c + 0.5) of them, drawn with
    ``SPLIT_SEED`` (never the run's seed), so every run of a grid tests on the same examples.
    """
    labels = np.asarray(labels)
    test = np.zeros(len(labels), bool)
    rng = np.random.default_rng(SPLIT_SEED + 3)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = int(np.floor(fraction * len(members) + 0.5))
        test[rng.permutation(members)[:count]] = True
    return test

"""A run's data for single-label image classification from arrays: the ``folder`` and ``tfds:NAME``
datasets share it (CIFAR-10 keeps its own preparer, which also reads CIFAR-10N).

Labels: the training labels are the ones given (noisy, as collected); ``noise_type='original'``
trains on them as they are, ``symmetric`` / ``symmetric_exclusive`` with a rate add synthetic
noise on top (drawn with the run's seed, :mod:`tfq_noise.data.noise`). Where clean labels
are given, ``train_clean_labels`` are those and ``train_corrupted`` marks the labels that
differ from them (given noise and synthetic noise alike), so memorization is measured as
for CIFAR-10. Without clean labels the given labels stand in for the clean ones:
``train_corrupted`` marks only the synthetic flips (all False with ``original``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfq_noise.data import base, noise
from tfq_noise.data.base import RunData, subset_and_split
from tfq_noise.data.pipeline import channel_stats
from tfq_noise.tasks import ClassificationTask

# ``original``: the labels as given; the synthetic types add noise on top (``pair`` is CIFAR-10's classes).
NOISE_TYPES = ("original", "symmetric", "symmetric_exclusive")

NO_CLEAN_CAVEAT = ("no clean labels were given: the given labels stand in for the clean ones, so "
                   "train_corrupted marks only synthetic flips and memorization of the given labels' own "
                   "errors cannot be measured")


def image_options(values, minimum: int) -> tuple[int, int, float]:
    """``(image_size, channels, test_fraction)`` from a dataset's options; ``minimum`` 0 means "as stored"."""
    size = base.int_option(values, "image_size", minimum)
    channels = base.int_option(values, "channels", minimum, 3)
    if channels == 2:
        allowed = "0 (as stored), 1 or 3" if minimum == 0 else "1 or 3"
        raise ValueError(f"dataset_kwargs channels must be {allowed}, got 2")
    return size, channels, base.fraction_option(values, "test_fraction")


def check_noise(config) -> None:
    if config.noise_type not in NOISE_TYPES:
        raise ValueError(f"{config.dataset}: noise_type must be one of {NOISE_TYPES} ('original' = the labels as "
                         f"given), got {config.noise_type!r}")
    if config.noise_type == "original" and config.noise_rate != 0:
        raise ValueError(f"noise_type 'original' has no rate: noise_rate must be 0 (got {config.noise_rate})")


def prepare_arrays(config, train_images: np.ndarray, given: np.ndarray, clean: np.ndarray | None,
                   test_images: np.ndarray, test_labels: np.ndarray, class_names: Sequence[str],
                   info: dict) -> RunData:
    """RunData from uint8 images and int64 labels (ids into ``class_names``)."""
    check_noise(config)
    num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError(f"{config.dataset}: at least 2 classes are needed, found {list(class_names)}")
    given = np.asarray(given, np.int64)
    train_idx, val_idx, subset = subset_and_split(len(given), config.train_size, config.validation_fraction)
    base = given[subset]
    reference = base if clean is None else np.asarray(clean, np.int64)[subset]
    if config.noise_type == "original":
        noisy = base
    else:
        noisy = noise.make_noisy_labels(config.noise_type, base, config.noise_rate, config.seed, num_classes).noisy
    corrupted = noisy != reference
    position = np.searchsorted(subset, train_idx), np.searchsorted(subset, val_idx)
    t, v = position
    train = np.asarray(train_images[train_idx])
    mean, std = channel_stats(train) if len(train) else (np.zeros(train.shape[-1]), np.ones(train.shape[-1]))
    info = {
        **info,
        "classes": list(map(str, class_names)),
        "clean_labels_given": clean is not None,
        "caveat": info.get("caveat") or (None if clean is not None else NO_CLEAN_CAVEAT),
        "train_examples": int(len(t)),
        "validation_examples": int(len(v)),
        "test_examples": int(len(test_labels)),
        "realized_flip_rate": float(np.mean(noisy != base)) if len(base) else 0.0,  # synthetic flips only
        "train_flip_rate": float(np.mean(corrupted[t])) if len(t) else 0.0,  # against the clean labels
    }
    if clean is not None:
        info["given_noise_rate"] = float(np.mean(base != reference)) if len(base) else 0.0
    return RunData(
        task=ClassificationTask(num_classes),
        train_images=train,
        train_labels=noisy[t],
        train_clean_labels=reference[t],
        train_corrupted=corrupted[t],
        val_images=np.asarray(train_images[val_idx]),
        val_labels=noisy[v] if config.validation_labels == "noisy" else reference[v],
        test_images=np.asarray(test_images),
        test_labels=np.asarray(test_labels, np.int64),
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        train_index=train_idx,
        val_index=val_idx,
        info=info,
    )

"""A run's data, prepared by dataset name: images, noisy and clean labels, splits.

Every preparer returns a :class:`RunData`. The choice of images (``train_size``
subset and validation split) depends only on the dataset, never on the seed or
the method, so every run of a grid sees the same images; the label noise is
drawn with the run's seed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import numpy as np

from tfq_noise.config import RunConfig
from tfq_noise.data import cifar10, cifar10n, noise
from tfq_noise.data.pipeline import channel_stats
from tfq_noise.tasks import ClassificationTask

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


def _subset_and_split(n: int, train_size: int, validation_fraction: float):
    """Indices of the training subset, split into (train, validation); fixed for a dataset."""
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(n)
    if train_size:
        if train_size > n:
            raise ValueError(f"train_size={train_size} exceeds the {n} training examples")
        order = order[:train_size]
    n_val = int(round(validation_fraction * len(order)))
    return np.sort(order[n_val:]), np.sort(order[:n_val]), np.sort(order)


def prepare_cifar10(config: RunConfig, paths: DataPaths) -> RunData:
    data = cifar10.load(paths.cifar10_dir, paths.tfds_data_dir)
    train_idx, val_idx, subset = _subset_and_split(len(data.train), config.train_size, config.validation_fraction)
    human = None
    if config.noise_type in cifar10n.NOISE_TYPES:
        path = paths.cifar10n_path or os.environ.get("TFQ_NOISE_CIFAR10N_PATH")
        if not path:
            raise ValueError(
                f"noise_type {config.noise_type!r} needs CIFAR-10N's CIFAR-10_human.pt: pass --cifar10n_path "
                "or set TFQ_NOISE_CIFAR10N_PATH"
            )
        human = {k: v[subset] for k, v in cifar10n.load_human_labels(path).items()}
    rate = None if human is not None else config.noise_rate
    noisy = noise.make_noisy_labels(
        config.noise_type, data.train.labels[subset], rate, config.seed, cifar10.NUM_CLASSES, human
    )
    # Positions of the train / validation examples inside ``subset``.
    position = {index: i for i, index in enumerate(subset)}
    t = np.array([position[i] for i in train_idx], dtype=np.int64)
    v = np.array([position[i] for i in val_idx], dtype=np.int64)
    val_labels = noisy.noisy[v] if config.validation_labels == "noisy" else noisy.clean[v]
    train_images = data.train.images[train_idx]
    mean, std = channel_stats(train_images)
    return RunData(
        task=ClassificationTask(cifar10.NUM_CLASSES),
        train_images=train_images,
        train_labels=noisy.noisy[t],
        train_clean_labels=noisy.clean[t],
        train_corrupted=noisy.corrupted_mask[t],
        val_images=data.train.images[val_idx],
        val_labels=val_labels,
        test_images=data.test.images,
        test_labels=data.test.labels,
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        train_index=train_idx,
        val_index=val_idx,
        info={
            "source": data.source,
            "caveat": data.caveat,
            "train_examples": int(len(t)),
            "validation_examples": int(len(v)),
            "test_examples": int(len(data.test)),
            "realized_flip_rate": float(noisy.realized_flip_rate),
            "train_flip_rate": float(np.mean(noisy.corrupted_mask[t])),
        },
    )


# Datasets by name; FER+ and BP4D register in tfq_noise.multitask.
PREPARERS: dict[str, Callable[[RunConfig, DataPaths], RunData]] = {"cifar10": prepare_cifar10}


def prepare(config: RunConfig, paths: DataPaths | None = None) -> RunData:
    if config.dataset not in PREPARERS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {sorted(PREPARERS)}")
    data = PREPARERS[config.dataset](config, paths or DataPaths())
    return test_subset(data, config.test_size) if config.test_size else data


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


from tfq_noise import multitask  # noqa: E402,F401  (registers the ferplus and bp4d preparers)

"""Datasets and input pipelines: CIFAR-10 (+ synthetic and CIFAR-10N noise), FER+, BP4D, your own
images (``folder``: a class-per-folder tree or a CSV) and TFDS (``tfds:NAME``).

A run's data: ``prepare(config, paths)`` → :class:`RunData`, by dataset name
(:mod:`tfq_noise.data.registry`; one module per dataset, each with its ``prepare``).
"""

from tfq_noise.data.cifar10 import CLASS_NAMES, NUM_CLASSES, Cifar10, Split, load as load_cifar10
from tfq_noise.data.cifar10n import NOISE_TYPES as CIFAR10N_NOISE_TYPES
from tfq_noise.data.cifar10n import load_human_labels, measured_noise_rates
from tfq_noise.data.noise import NOISE_TYPES, NoisyLabels, make_noisy_labels, pair, symmetric
from tfq_noise.data.pipeline import channel_stats, make_dataset
from tfq_noise.data.base import SPLIT_SEED, TEST_SUBSET_SEED, DataPaths, RunData, test_subset
from tfq_noise.data.registry import NOISE_TYPES as DATASET_NOISE_TYPES
from tfq_noise.data.registry import PREPARERS, noise_types, prepare

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "Cifar10",
    "Split",
    "load_cifar10",
    "CIFAR10N_NOISE_TYPES",
    "load_human_labels",
    "measured_noise_rates",
    "NOISE_TYPES",
    "NoisyLabels",
    "make_noisy_labels",
    "pair",
    "symmetric",
    "channel_stats",
    "make_dataset",
    "SPLIT_SEED",
    "TEST_SUBSET_SEED",
    "DataPaths",
    "RunData",
    "test_subset",
    "DATASET_NOISE_TYPES",
    "PREPARERS",
    "noise_types",
    "prepare",
]

"""Datasets and input pipelines: CIFAR-10 (+ synthetic and CIFAR-10N noise), FER+, BP4D."""

from tfq_noise.data.cifar10 import CLASS_NAMES, NUM_CLASSES, Cifar10, Split, load as load_cifar10
from tfq_noise.data.cifar10n import NOISE_TYPES as CIFAR10N_NOISE_TYPES
from tfq_noise.data.cifar10n import load_human_labels, measured_noise_rates
from tfq_noise.data.noise import NOISE_TYPES, NoisyLabels, make_noisy_labels, pair, symmetric
from tfq_noise.data.pipeline import channel_stats, make_dataset

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
]

"""Datasets by name: ``prepare(config, paths)`` → :class:`~tfq_noise.data.base.RunData`.

One module per dataset, each with a ``prepare(config, paths)`` and the noise types it accepts;
this module only imports them (none imports it back), so there is no import cycle.
``tfds:NAME`` names any TFDS image-classification dataset.
"""

from __future__ import annotations

from typing import Callable

from tfq_noise.data import bp4d, cifar10, classification, ferplus, folder, noise, tfds_images
from tfq_noise.data.base import DataPaths, RunData, test_subset

PREPARERS: dict[str, Callable[..., RunData]] = {
    "cifar10": cifar10.prepare,
    "ferplus": ferplus.prepare,
    "bp4d": bp4d.prepare,
    "folder": folder.prepare,
    "tfds:NAME": tfds_images.prepare,
}
# The noise types (--noise_type) each dataset accepts.
NOISE_TYPES: dict[str, tuple[str, ...]] = {
    "cifar10": tuple(noise.NOISE_TYPES),
    "ferplus": ferplus.NOISE_TYPES,
    "bp4d": bp4d.NOISE_TYPES,
    "folder": classification.NOISE_TYPES,
    "tfds:NAME": classification.NOISE_TYPES,
}

# The dataset_kwargs each dataset takes, with their defaults (CIFAR-10: none).
DATASET_OPTIONS: dict[str, dict] = {
    "cifar10": {},
    "ferplus": ferplus.FERPLUS_DEFAULTS,
    "bp4d": bp4d.BP4D_DEFAULTS,
    "folder": folder.DEFAULTS,
    "tfds:NAME": tfds_images.DEFAULTS,
}


def registry_key(dataset: str) -> str:
    """The PREPARERS key of ``dataset`` ('tfds:mnist' → 'tfds:NAME'); ValueError if unknown."""
    if dataset.startswith(tfds_images.PREFIX):
        tfds_images.dataset_name(dataset)  # raises on an empty name
        return "tfds:NAME"
    if dataset not in PREPARERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(PREPARERS)}")
    return dataset


def noise_types(dataset: str) -> tuple[str, ...]:
    return NOISE_TYPES[registry_key(dataset)]


def prepare(config, paths: DataPaths | None = None) -> RunData:
    data = PREPARERS[registry_key(config.dataset)](config, paths or DataPaths())
    return test_subset(data, config.test_size) if config.test_size else data

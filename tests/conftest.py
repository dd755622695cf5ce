"""Shared pytest fixtures: where the offline data lives, prepared once per session.

Data location: ``TFQ_NOISE_SHARED_DATASETS`` if set, else ``<repo>/../shared/datasets``.
Derived copies (materialized CIFAR-10 binaries, unpacked FER+) go under
``TFQ_NOISE_CACHE_DIR`` (default ``~/.cache/tfq_noise``) and are reused.
Tests needing data that is absent are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tfq_noise  # noqa: F401  (must precede any TensorFlow import)

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("TFQ_NOISE_CACHE_DIR") or Path.home() / ".cache" / "tfq_noise")


def data_missing(reason: str):
    """Skips the test, or fails it where data must be there (CI sets TFQ_NOISE_REQUIRE_DATA=1)."""
    if os.environ.get("TFQ_NOISE_REQUIRE_DATA") == "1":
        pytest.fail(f"required test data is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_datasets_dir() -> Path:
    """The offline data folder (see its README.md)."""
    path = Path(os.environ.get("TFQ_NOISE_SHARED_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    if not path.is_dir():
        data_missing(f"offline datasets not found at {path} (set TFQ_NOISE_SHARED_DATASETS)")
    return path


@pytest.fixture(scope="session")
def cifar10_dir(request) -> Path:
    """A directory in the official CIFAR-10 binary layout (materialized once if needed)."""
    if os.environ.get("TFQ_NOISE_CIFAR10_DIR"):
        return Path(os.environ["TFQ_NOISE_CIFAR10_DIR"])
    shared = request.getfixturevalue("shared_datasets_dir")
    out = CACHE_ROOT / "cifar10"
    # materialize.py is idempotent: a complete copy is left as it is.
    subprocess.run(
        [sys.executable, str(shared / "cifar10" / "materialize.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def cifar10_data(cifar10_dir):
    """CIFAR-10 loaded once from ``cifar10_dir``."""
    from tfq_noise.data import cifar10

    return cifar10.load(cifar10_dir=str(cifar10_dir))


@pytest.fixture(scope="session")
def official_order_labels(shared_datasets_dir) -> dict:
    """``{'train': uint8 [50000], 'test': uint8 [10000]}`` official-order labels."""
    import numpy as np

    with np.load(shared_datasets_dir / "cifar10" / "official_order_labels.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.fixture(scope="session")
def cifar10n_path(shared_datasets_dir) -> Path:
    path = shared_datasets_dir / "cifar10n" / "CIFAR-10_human.pt"
    if not path.is_file():
        data_missing(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def ferplus_dir(request) -> Path:
    """The unpacked ``ferplus/`` folder (unpacked once into the cache if needed)."""
    if os.environ.get("TFQ_NOISE_FERPLUS_DIR"):
        return Path(os.environ["TFQ_NOISE_FERPLUS_DIR"])
    from tfq_noise.data import ferplus

    shared = request.getfixturevalue("shared_datasets_dir")
    archive = shared / "ferplus" / "ferplus-images-and-labels.tar.gz"
    if not archive.is_file():
        data_missing(f"{archive} not found")
    return Path(ferplus.unpack_archive(str(archive), str(CACHE_ROOT / "ferplus-unpacked")))


@pytest.fixture(scope="session")
def tiny_run_data(cifar10_data, cifar10_dir):
    """Factory ``make(config, test_size=200) -> RunData`` for fast ``train(..., data=...)`` calls.

    Prepares the run's data as ``train`` would (same subset, split and noise),
    from the CIFAR-10 copy loaded once per session, then keeps only the first
    ``test_size`` test images so that the per-epoch evaluation is cheap.
    """
    import dataclasses
    from unittest import mock

    from tfq_noise import data as datasets

    def make(config, test_size: int = 200):
        with mock.patch.object(datasets.cifar10, "load", lambda *args, **kwargs: cifar10_data):
            data = datasets.prepare(config, datasets.DataPaths(cifar10_dir=str(cifar10_dir)))
        return dataclasses.replace(data, test_images=data.test_images[:test_size],
                                   test_labels=data.test_labels[:test_size])

    return make

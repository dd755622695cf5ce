"""CIFAR-10N real human label noise (Wei et al., ICLR 2022), read without PyTorch.

The authors publish ``CIFAR-10_human.pt``: a PyTorch zip archive whose
``archive/data.pkl`` pickles a dict of numpy arrays, 50,000 labels each, in the
official CIFAR-10 train order. A pickle can run arbitrary code when loaded, so it
is read here with a restricted unpickler that can only rebuild numpy arrays.
"""

from __future__ import annotations

import _codecs
import importlib
import io
import os
import pickle
import zipfile
from typing import Any, Callable

import numpy as np

NUM_TRAIN = 50_000
NUM_CLASSES = 10
CLEAN_KEY = "clean_label"
NOISE_TYPES: dict[str, str] = {
    "aggre": "aggre_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
    "worst": "worse_label",
}


def _numpy_attribute(module_names: tuple[str, ...], name: str) -> Any:
    """The first of ``module.name`` that exists (numpy 2 renamed numpy.core to numpy._core)."""
    for module_name in module_names:
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {[m + '.' + name for m in module_names]}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to latin-1, the only use pickle protocol 2 makes of it.

    Protocol 2 (PyTorch's default) stores ``bytes`` as ``_codecs.encode(str, 'latin1')``;
    numpy arrays' raw data travels that way.
    """
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode with encoding {encoding!r}: only 'latin1' byte strings "
            "are allowed in a CIFAR-10N label file"
        )
    return _codecs.encode(text, "latin1")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attribute(_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attribute(_MULTIARRAY, "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_attribute(_MULTIARRAY, "scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_attribute(_MULTIARRAY, "scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (and dicts/lists/strings/numbers).

    Any other global (``os.system``, ``builtins.eval``, torch classes, ...) is refused
    before it is looked up, so a malicious pickle cannot run code through it.
    """

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction "
                "is allowed when reading CIFAR-10N labels. The file is not a plain "
                "CIFAR-10N label file (or has been tampered with)."
            )
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        # torch.save stores tensors as persistent ids; CIFAR-10N stores numpy arrays.
        raise pickle.UnpicklingError(
            "the file holds PyTorch tensors (persistent ids), not numpy arrays; this reader "
            "only accepts the CIFAR-10N label file, whose values are numpy arrays"
        )


def _read_data_pickle(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CIFAR-10N label file {path!r} not found; it is CIFAR-10_human.pt as published "
            "by the CIFAR-N authors (offline copy: shared/datasets/cifar10n/)."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a zip archive; expected CIFAR-10_human.pt in PyTorch's zip "
            "format (torch >= 1.6). Re-save it with a recent torch or re-download it."
        )
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(names) != 1:
            raise ValueError(
                f"{path!r} should hold exactly one '*/data.pkl', found {names or 'none'}"
            )
        return archive.read(names[0])


def load_human_labels(path: str) -> dict[str, np.ndarray]:
    """Reads CIFAR-N's ``CIFAR-10_human.pt`` without PyTorch and without unrestricted pickle.

    Returns:
      ``{key: int64 [50000]}`` with ``clean_label`` and every value of ``NOISE_TYPES``
      (plus any other label arrays the file holds), in official train order.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a zip / no data.pkl / not a dict of 50,000-entry label arrays.
      pickle.UnpicklingError: the pickle references anything but numpy arrays.
    """
    payload = NumpyOnlyUnpickler(io.BytesIO(_read_data_pickle(path))).load()
    if not isinstance(payload, dict):
        raise ValueError(f"{path!r}: expected a dict of label arrays, got {type(payload).__name__}")
    labels: dict[str, np.ndarray] = {}
    for key, value in payload.items():
        array = np.asarray(value)
        if array.shape != (NUM_TRAIN,):
            raise ValueError(
                f"{path!r}: {key!r} has shape {array.shape}, expected ({NUM_TRAIN},): one "
                "label per CIFAR-10 training image"
            )
        if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() >= NUM_CLASSES:
            raise ValueError(f"{path!r}: {key!r} is not integer class ids in 0..9")
        labels[str(key)] = array.astype(np.int64)
    missing = [k for k in (CLEAN_KEY, *NOISE_TYPES.values()) if k not in labels]
    if missing:
        raise ValueError(f"{path!r} lacks {missing}; found {sorted(labels)}")
    return labels


def human_noisy_labels(human_labels: dict[str, np.ndarray], noise_type: str) -> np.ndarray:
    """The CIFAR-10N labels of one noise type (``'aggre'``, ``'random1'`` .. ``'worst'``)."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(
            f"unknown CIFAR-10N noise type {noise_type!r}; valid: {', '.join(NOISE_TYPES)}"
        )
    return human_labels[NOISE_TYPES[noise_type]]


def measured_noise_rates(human_labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of training labels that differ from ``clean_label``, per CIFAR-10N noise type.

    On the published file: aggre ~0.09, random1..3 ~0.17-0.18, worst ~0.40.
    """
    clean = human_labels[CLEAN_KEY]
    return {
        noise_type: float(np.mean(human_labels[key] != clean))
        for noise_type, key in NOISE_TYPES.items()
    }

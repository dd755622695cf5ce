"""tfq_noise: quantization-aware training as a regularizer against noisy labels.

Importing this package selects Keras 2 (``tf_keras``) for TensorFlow, because
tensorflow-model-optimization cannot quantize Keras 3 models. The variable must
be set before TensorFlow is first imported, so import ``tfq_noise`` first.
"""

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    # TensorFlow already chose Keras 3; tf.keras would not be tf_keras.
    import warnings

    warnings.warn(
        "tfq_noise was imported after TensorFlow without TF_USE_LEGACY_KERAS=1; "
        "tf.keras may be Keras 3. Import tfq_noise before tensorflow, or set "
        "TF_USE_LEGACY_KERAS=1 in the environment.",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its devices with the native stderr muted.

    TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog()", "Could not find cuda
    drivers", "failed call to cuInit" on a machine without a GPU) are written before any log level applies.
    Set ``TFQ_NOISE_TF_LOGS=1`` to see them. Python errors are not hidden: stderr is restored before they
    propagate.
    """
    if "tensorflow" in sys.modules or os.environ.get("TFQ_NOISE_TF_LOGS") == "1":
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (e.g. some notebooks)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe; does not initialize the runtime
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

import tf_keras as keras  # noqa: E402  (Keras 2, the one tfmot understands)

__version__ = "0.1.0"


def require_tf_keras_model(model) -> None:
    """Raises a TypeError explaining the fix if ``model`` is not a tf_keras model."""
    if isinstance(model, keras.Model):
        return
    module = type(model).__module__
    if module.startswith("keras"):
        raise TypeError(
            f"{type(model).__name__} is a Keras 3 model ({module}); tensorflow-model-"
            "optimization only quantizes Keras 2 models. Build it with `tf_keras` "
            "(`from tfq_noise import keras`), or import tfq_noise before TensorFlow "
            "so that tf.keras is tf_keras (TF_USE_LEGACY_KERAS=1)."
        )
    raise TypeError(f"expected a tf_keras.Model, got {type(model).__name__}")


# The public API, imported on first use (tensorflow-model-optimization and cleanlab take seconds to load):
# name → the module that defines it. docs/api.md documents each.
_LAZY = {
    "quantize_model": "tfq_noise.quantization.scheme",
    "method": "tfq_noise.api",
    "FitMethod": "tfq_noise.api",
    "MemorizationCallback": "tfq_noise.memorization",
    "find_label_errors": "tfq_noise.label_errors",
    "LabelErrors": "tfq_noise.label_errors",
    "export_int8": "tfq_noise.deploy.keras_export",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'tfq_noise' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["keras", "require_tf_keras_model", "__version__", *_LAZY]

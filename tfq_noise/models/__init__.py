"""Models, looked up by name: ``build_model(name, **kwargs)``; also every ``tf_keras.applications``
model by its name (``MobileNetV2``...; :mod:`tfq_noise.models.applications`)."""

from __future__ import annotations

from typing import Callable

from tfq_noise.models.multitask import multitask_inception_v3, multitask_model, multitask_small_cnn
from tfq_noise.models.common import DROPOUT_POSITIONS
from tfq_noise.models.resnet import resnet20
from tfq_noise.models.applications import APPLICATIONS

MODELS: dict[str, Callable] = {
    "resnet20": resnet20,
    # Multi-task detectors: shared backbone, one BatchNorm + logit head per task (tfq_noise.models.multitask).
    "multitask": multitask_model,  # backbone=small_cnn|inception_v3 in model_kwargs
    "multitask_small_cnn": multitask_small_cnn,
    "multitask_inception_v3": multitask_inception_v3,
    **APPLICATIONS,  # tf_keras.applications by name (untrained, logits): MobileNetV2, ResNet50, ...
}


# Integer arguments that must be at least this, whichever model takes them (0 blocks builds a model of no block).
MINIMUM_ARGUMENTS = {"blocks_per_stage": 1, "base_filters": 1, "head_units": 0}


def argument_problem(kwargs) -> str | None:
    """Why ``kwargs`` cannot build a model (an argument of :data:`MINIMUM_ARGUMENTS` below its minimum), or None."""
    for key, low in MINIMUM_ARGUMENTS.items():
        value = dict(kwargs).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            return f"model_kwargs {key}={value}: must be >= {low}"
    return None


def build_model(name: str, **kwargs):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    problem = argument_problem(kwargs)
    if problem:
        raise ValueError(f"model {name!r}: {problem}")
    return MODELS[name](**kwargs)


__all__ = ["APPLICATIONS", "DROPOUT_POSITIONS", "MINIMUM_ARGUMENTS", "MODELS", "argument_problem", "build_model",
           "resnet20"]

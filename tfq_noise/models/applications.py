"""``tf_keras.applications`` models by name (``--model=MobileNetV2 --model_kwargs=alpha=0.35``).

Built untrained (``weights=None``) with the data's input shape and class count, returning
logits (``classifier_activation=None``). Their own keyword arguments (``alpha``, ``pooling``...)
pass through ``model_kwargs``; the arguments this project fixes (``weights``, ``include_top``,
``input_tensor``, ``input_shape``, ``classes``, ``classifier_activation``) cannot be given.
They take none of the project's architecture changes (``dropout_rate``, ``l2`` from the
``dropout`` method and ``weight_decay_type=l2``): :func:`method_kwargs_problem` says so
before a run starts. Each application has its own minimum input size (e.g. 32×32 for
MobileNetV2, 75×75 for InceptionV3); a smaller one fails when the model is built.

``bn_momentum`` (this project's, not the application's) sets the moving-average momentum of
every BatchNormalization layer. Several applications fix it at 0.999 (MobileNetV2, EfficientNet),
a setting made for long ImageNet schedules: trained from scratch for a few thousand steps their
inference-mode statistics can lag so far behind the weights that the model predicts one class
in inference mode while it is accurate in training mode (the run's train/inference-mode gap
shows it). ``bn_momentum=0.99`` or ``0.9`` lets them follow.
"""

from __future__ import annotations

import inspect
from typing import Callable

from tfq_noise import keras

FIXED = ("weights", "include_top", "input_tensor", "input_shape", "classes", "classifier_activation")


def _application_names() -> list[str]:
    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def _builder(name: str) -> Callable:
    application = getattr(keras.applications, name)
    own = [p for p in inspect.signature(application).parameters.values()
           if p.name not in FIXED and p.kind is not inspect.Parameter.VAR_KEYWORD]

    def build(num_classes: int, input_shape=(32, 32, 3), bn_momentum: float | None = None, **kwargs):
        unknown = sorted(set(kwargs) - {p.name for p in own})
        if unknown:
            raise ValueError(f"model {name!r} (tf_keras.applications) takes no {unknown}; it takes "
                             f"{[p.name for p in own] + ['bn_momentum']} (dropout and L2 methods do not apply to it)")
        if bn_momentum is not None and (isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float))
                                        or not 0.0 <= float(bn_momentum) < 1.0):
            raise ValueError(f"model {name!r}: bn_momentum must be in [0, 1), got {bn_momentum!r}")
        model = application(weights=None, include_top=True, input_shape=tuple(input_shape), classes=int(num_classes),
                            classifier_activation=None, **kwargs)
        if bn_momentum is not None:
            set_bn_momentum(model, float(bn_momentum))
        return model

    keyword = inspect.Parameter.KEYWORD_ONLY
    build.__signature__ = inspect.Signature(
        [inspect.Parameter("num_classes", keyword), inspect.Parameter("input_shape", keyword, default=(32, 32, 3)),
         inspect.Parameter("bn_momentum", keyword, default=None, annotation=float)]
        + [p.replace(kind=keyword) for p in own])
    build.__name__ = name
    build.__doc__ = f"tf_keras.applications.{name}, untrained, returning logits."
    return build


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer in ``model`` (nested models
    included); the number of layers changed. Read at trace time and saved in each layer's config."""
    changed = 0
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            changed += 1
    return changed


APPLICATIONS: dict[str, Callable] = {name: _builder(name) for name in _application_names()}


def method_kwargs_problem(model: str, method_kwargs) -> str | None:
    """Why a method's model arguments (``dropout_rate``, ``l2``) cannot go to ``model``, or None."""
    if model in APPLICATIONS and method_kwargs:
        return (f"model {model!r} (tf_keras.applications) cannot take the method's architecture changes "
                f"{sorted(method_kwargs)}: use a project model (resnet20) for dropout or weight_decay_type=l2")
    return None

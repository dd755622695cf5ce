"""Multi-task detectors: a shared backbone, then one head per task (the paper's §3.2 set-up).

    features = backbone(image)                      # shared, e.g. global-average-pooled
    for each task t:
        h_t = BatchNormalization(features)          # head_<t>_bn: the task's own input scale
        [h_t = Dropout(h_t)]                        # head_<t>_dropout (dropout method, position head)
        [h_t = ReLU(Dense(head_units)(h_t))]        # head_<t>_hidden (only if head_units > 0)
        logit_t = Dense(1)(h_t)                     # head_<t>_dense
    logits = Concatenate([logit_1, ..., logit_T])   # [B, T], named "logits"; sigmoid is in the loss

The paper keeps BatchNormalization when it quantizes, and keeps it *per task*
("per-AU") so that each task learns its own input scale and the tasks'
discrepancies do not destabilize training; here every head normalizes the shared
features with its own BatchNormalization before its own logit.

Layer names are predictable so that per-task bit-widths can name them: see
:func:`head_layer_names` and :func:`head_layer_bits` (``layer_bits`` of the
``quantization`` method).

Backbones, by name (``BACKBONES``):

* ``small_cnn`` — a small CNN from scratch, sized for FER+'s 48×48 grayscale faces
  on a 2-core CPU: at the default width 16, 75k weights and 5.4M multiply-adds per
  image; one FER+ epoch (28,385 images, batch 128, with the per-epoch evaluation)
  took 27 s in float and 37 s quantized on 2 cores shared with another training
  (width 32: 0.29M weights, 21M multiply-adds, 64–73 s per float epoch);
* ``inception_v3`` — the paper's "vanilla architecture" for BP4D: the InceptionV3
  encoder (``weights='imagenet'`` for the ImageNet-pretrained one, which needs a
  download; default ``None``, random init) at 299×299 (at least 75×75), global
  average pooling, then the per-task heads. Its inputs must be scaled to [-1, 1]
  (mean = std = 127.5 in pixel units), as the BP4D preparer does.

Task names: ``tasks`` (a task-set name of ``TASK_SETS`` or a list of names), or by
default the task set whose size is ``num_classes`` (8: FER+ emotions, 12: BP4D AUs),
else ``task0 .. task{T-1}``.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from tfq_noise import keras
from tfq_noise.data import bp4d, ferplus
from tfq_noise.models.common import DROPOUT_POSITIONS, check_regularization
from tfq_noise.models.common import kernel_regularizer as _regularizer

TASK_SETS: dict[str, tuple[str, ...]] = {
    "ferplus": tuple(ferplus.EMOTIONS),
    "bp4d": tuple(f"AU{au}" for au in bp4d.AUS),  # AU1, AU2, AU4, ..., AU24, the paper's order
}

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ----------------------------------------------------------------- task names


def task_names(num_classes: int, tasks: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The task names of a ``num_classes``-output model (see the module docstring)."""
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if tasks is None:
        matching = [names for names in TASK_SETS.values() if len(names) == num_classes]
        names = matching[0] if len(matching) == 1 else tuple(f"task{i}" for i in range(num_classes))
    elif isinstance(tasks, str):
        if tasks not in TASK_SETS:
            raise ValueError(f"unknown task set {tasks!r}; choose one of {sorted(TASK_SETS)} or give a list")
        names = TASK_SETS[tasks]
    else:
        names = tuple(str(t) for t in tasks)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} task names {list(names)} for a model with {num_classes} outputs")
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {list(names)}")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise ValueError(f"task names may only hold letters, digits, '_', '.', '-' (layer names): {bad}")
    return tuple(names)


def head_layer_names(task: str) -> dict[str, str]:
    """``{'bn': 'head_<task>_bn', 'hidden': 'head_<task>_hidden', 'dense': 'head_<task>_dense'}``."""
    return {part: f"head_{task}_{part}" for part in ("bn", "hidden", "dense")}


def head_layer_bits(bits_by_task: Mapping[str, Sequence[int]], layer: str = "dense") -> dict[str, tuple[int, int]]:
    """Per-task bit-widths as the ``quantization`` method's ``layer_bits``.

    ``head_layer_bits({'happiness': (2, 8)})`` → ``{'head_happiness_dense': (2, 8)}``:
    the head's logit layer gets 2-bit weights and reads an 8-bit input (its
    BatchNorm's output). ``layer='hidden'`` names the hidden layers instead
    (heads built with ``head_units > 0``).
    """
    if layer not in ("dense", "hidden"):
        raise ValueError(f"layer must be 'dense' or 'hidden', got {layer!r}")
    out = {}
    for task, bits in bits_by_task.items():
        bits = tuple(int(b) for b in bits)
        if len(bits) != 2:
            raise ValueError(f"bits of task {task!r} must be (weight_bits, activation_bits), got {bits!r}")
        out[head_layer_names(task)[layer]] = bits
    return out


# ----------------------------------------------------------------- backbones




def small_cnn_backbone(inputs, *, width: int = 16, dropout_rate: float = 0.0, dropout_position: str = "head",
                       l2: float = 0.0):
    """Conv-BN-ReLU stack: stem (stride 2), then 3 stages of width·(1, 2, 4) channels; returns pooled features.

    At 48×48: stem 3×3/2 → 24×24 × w; stage 1: one conv, max-pool → 12×12;
    stage 2: two convs (2w), max-pool → 6×6; stage 3: two convs (4w); global
    average pooling → 4w features. ``dropout_position``: ``blocks`` after every
    conv, ``stages`` after every stage (``head`` is applied by the caller).
    """
    if isinstance(width, bool) or int(width) != width or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    width = int(width)

    def conv(x, filters, strides, name):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                kernel_initializer="he_normal", kernel_regularizer=_regularizer(l2), name=name)(x)
        x = keras.layers.BatchNormalization(name=name + "_bn")(x)
        x = keras.layers.ReLU(name=name + "_relu")(x)
        if dropout_rate > 0 and dropout_position == "blocks":
            x = keras.layers.Dropout(dropout_rate, name=name + "_dropout")(x)
        return x

    x = conv(inputs, width, 2, "stem")
    for stage, (filters, convs) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2)), start=1):
        for i in range(convs):
            x = conv(x, filters, 1, f"s{stage}c{i + 1}")
        if stage < 3:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"s{stage}_pool")(x)
        if dropout_rate > 0 and dropout_position == "stages":
            x = keras.layers.Dropout(dropout_rate, name=f"s{stage}_dropout")(x)
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def inception_v3_backbone(inputs, *, weights: str | None = None, dropout_rate: float = 0.0,
                          dropout_position: str = "head", l2: float = 0.0):
    """InceptionV3 (Szegedy et al., 2016) without its top, average-pooled; layers inlined in the model.

    ``weights``: None (random init) or ``'imagenet'`` (downloaded by Keras, needs
    the network) or a path to a weights file. Only ``dropout_position='head'``
    is supported (the encoder is Keras' own). ``l2`` adds a penalty on every
    conv kernel of the encoder (the heads get theirs from the caller).
    """
    if dropout_rate > 0 and dropout_position != "head":
        raise ValueError(f"inception_v3 supports dropout_position='head' only, got {dropout_position!r}")
    height, width, channels = inputs.shape[1:]
    if channels != 3 or min(height, width) < 75:
        raise ValueError(f"inception_v3 needs [H, W, 3] inputs with H, W >= 75, got {tuple(inputs.shape[1:])}")
    # ``input_tensor`` inlines the encoder's layers in the caller's functional graph (a nested
    # model could not be quantized layer by layer).
    encoder = keras.applications.InceptionV3(include_top=False, weights=weights, input_tensor=inputs, pooling="avg")
    if l2 > 0:
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.Conv2D):
                # Takes effect through add_loss, which survives neither clone_model nor quantize:
                # the caller rebuilds the model from its config (see multitask_model).
                layer.kernel_regularizer = keras.regularizers.L2(l2)
    return encoder.output


BACKBONES = {"small_cnn": small_cnn_backbone, "inception_v3": inception_v3_backbone}


# ----------------------------------------------------------------- the model


def multitask_model(
    num_classes: int,
    input_shape: tuple[int, int, int] = (48, 48, 1),
    *,
    backbone: str = "small_cnn",
    tasks: str | Sequence[str] | None = None,
    head_units: int = 0,
    dropout_rate: float = 0.0,
    dropout_position: str = "head",
    l2: float = 0.0,
    **backbone_kwargs,
) -> keras.Model:
    """A shared ``backbone`` and one head per task (see the module docstring); outputs [B, T] logits.

    ``dropout_position='head'`` puts one dropout on the shared features, before
    the heads; ``l2`` penalizes every kernel (coupled weight decay). Other keyword
    arguments go to the backbone (``width`` for small_cnn, ``weights`` for inception_v3).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    check_regularization(dropout_rate, dropout_position, l2)
    if isinstance(head_units, bool) or int(head_units) != head_units or head_units < 0:
        raise ValueError(f"head_units must be an int >= 0, got {head_units!r}")
    names = task_names(num_classes, tasks)
    inputs = keras.Input(tuple(input_shape), name="image")
    features = BACKBONES[backbone](inputs, dropout_rate=dropout_rate, dropout_position=dropout_position, l2=l2,
                                   **backbone_kwargs)
    logits = []
    for task in names:
        layer = head_layer_names(task)
        h = keras.layers.BatchNormalization(name=layer["bn"])(features)
        if dropout_rate > 0 and dropout_position == "head":
            # After the task's BN, not before: BN statistics gathered under dropout would not match
            # inference (the variance shift), and each task drops its own units.
            h = keras.layers.Dropout(dropout_rate, name=f"head_{task}_dropout")(h)
        if head_units:
            h = keras.layers.Dense(int(head_units), kernel_initializer="he_normal", kernel_regularizer=_regularizer(l2),
                                   name=layer["hidden"])(h)
            h = keras.layers.ReLU(name=f"head_{task}_relu")(h)
        logits.append(keras.layers.Dense(1, kernel_regularizer=_regularizer(l2), name=layer["dense"])(h))
    out = keras.layers.Concatenate(name="logits")(logits) if len(logits) > 1 else logits[0]
    model = keras.Model(inputs, out, name=f"multitask_{backbone}")
    if l2 > 0 and backbone == "inception_v3":
        # Regularizers set on built layers only count once the model is rebuilt from its config.
        rebuilt = keras.Model.from_config(model.get_config())
        rebuilt.set_weights(model.get_weights())
        model = rebuilt
    return model


def multitask_small_cnn(num_classes: int = 8, input_shape=(48, 48, 1), **kwargs) -> keras.Model:
    """:func:`multitask_model` with the ``small_cnn`` backbone (FER+)."""
    return multitask_model(num_classes, input_shape, backbone="small_cnn", **kwargs)


def multitask_inception_v3(num_classes: int = 12, input_shape=(299, 299, 3), **kwargs) -> keras.Model:
    """:func:`multitask_model` with the ``inception_v3`` backbone (BP4D, the paper's vanilla architecture)."""
    return multitask_model(num_classes, input_shape, backbone="inception_v3", **kwargs)


__all__ = ["BACKBONES", "DROPOUT_POSITIONS", "TASK_SETS", "head_layer_bits", "head_layer_names",
           "inception_v3_backbone", "multitask_inception_v3", "multitask_model", "multitask_small_cnn",
           "small_cnn_backbone", "task_names"]

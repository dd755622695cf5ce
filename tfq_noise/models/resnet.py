"""ResNet20 for CIFAR (He et al., 2016, §4.2): 3 stages × 3 basic blocks, 16/32/64 filters.

Shortcuts that change shape are 1×1 convolutions (option B) rather than the
original zero-padding (option A): a padded identity is a Lambda layer that
neither tfmot nor the TFLite converter quantizes. It adds 2,848 weights to the
~0.27M.
"""

from __future__ import annotations

from tfq_noise import keras
from tfq_noise.models.common import DROPOUT_POSITIONS, check_regularization
from tfq_noise.models.common import kernel_regularizer as _regularizer


def _conv_bn(x, filters, kernel_size, strides, name, batchnorm, l2):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=not batchnorm,
        kernel_initializer="he_normal", kernel_regularizer=_regularizer(l2), name=name,
    )(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name=name + "_bn")(x)
    return x


def resnet20(
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    *,
    batchnorm: bool = True,
    dropout_rate: float = 0.0,
    dropout_position: str = "head",
    l2: float = 0.0,
    blocks_per_stage: int = 3,
    base_filters: int = 16,
) -> keras.Model:
    """Builds ResNet20 (``blocks_per_stage=3``); outputs logits.

    ``dropout_position``: ``head`` (before the classifier), ``stages`` (after
    each stage) or ``blocks`` (after each residual block). ``l2``: an L2
    penalty on every kernel (coupled weight decay).
    """
    check_regularization(dropout_rate, dropout_position, l2)

    def dropout(x, position, name):
        if dropout_rate > 0 and position == dropout_position:
            x = keras.layers.Dropout(dropout_rate, name=name)(x)
        return x

    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, base_filters, 3, 1, "stem", batchnorm, l2)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage in range(3):
        filters = base_filters * 2**stage
        for block in range(blocks_per_stage):
            name = f"s{stage + 1}b{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = _conv_bn(x, filters, 3, strides, name + "_conv1", batchnorm, l2)
            y = keras.layers.ReLU(name=name + "_relu1")(y)
            y = _conv_bn(y, filters, 3, 1, name + "_conv2", batchnorm, l2)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = _conv_bn(shortcut, filters, 1, strides, name + "_proj", batchnorm, l2)
            x = keras.layers.Add(name=name + "_add")([shortcut, y])
            x = keras.layers.ReLU(name=name + "_relu2")(x)
            x = dropout(x, "blocks", name + "_dropout")
        x = dropout(x, "stages", f"s{stage + 1}_dropout")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = dropout(x, "head", "head_dropout")
    # float32 logits: under mixed precision the loss should not be computed in bfloat16.
    logits = keras.layers.Dense(
        num_classes, kernel_initializer="he_normal", kernel_regularizer=_regularizer(l2), name="logits",
        dtype="float32",
    )(x)
    return keras.Model(inputs, logits, name="resnet20")

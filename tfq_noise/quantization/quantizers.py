"""tfmot ``Quantizer``s implementing the paper's weight and activation schemes.

tfmot's own quantizers differ from the paper: ``LastValueQuantizer`` keeps the
range of the previous batch in variables, and ``MovingAverageQuantizer``
quantizes with the moving average during training too. The paper asks for the
range of the *current* batch in training and its moving average at inference.
"""

from __future__ import annotations

import tfq_noise  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tfq_noise import keras
from tfq_noise.quantization import ops

_Quantizer = tfmot.quantization.keras.quantizers.Quantizer


class WeightQuantizer(_Quantizer):
    """Symmetric weights, range ``max|W|`` recomputed at every call.

    ``per_channel``: one range per output channel (last axis); otherwise one for
    the whole kernel (Dense layers, which TFLite only converts per tensor). The
    range needs no state, so the deployed model uses exactly the trained grid.

    ``depthwise``: the kernel is a depthwise kernel ``(*spatial, C, M)`` whose
    output channels span its last *two* axes; with ``per_channel`` it gets one
    range per (input channel, multiplier) pair, ``C × M`` ranges
    (:func:`ops.fake_quant_depthwise`).
    """

    def __init__(self, num_bits: int, per_channel: bool = True, depthwise: bool = False):
        self.num_bits = ops.check_bits(num_bits, "weight bits")
        self.per_channel = bool(per_channel)
        self.depthwise = bool(depthwise)

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        if self.per_channel and self.depthwise:
            return ops.fake_quant_depthwise(inputs, self.num_bits, straight_through=bool(training))
        scale = ops.per_channel_scale(inputs) if self.per_channel else ops.per_tensor_scale(inputs)
        return ops.fake_quant(
            inputs, scale, self.num_bits, per_channel=self.per_channel, straight_through=bool(training)
        )

    def get_config(self):
        return {"num_bits": self.num_bits, "per_channel": self.per_channel, "depthwise": self.depthwise}

    def __eq__(self, other):
        return isinstance(other, WeightQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other


def global_batch_max(value):
    """``value`` (a per-replica batch maximum) maximized over the replicas of a ``tf.distribute`` strategy.

    Under MirroredStrategy each replica sees a slice of the global batch; the range the paper asks for is
    the global batch's, as on one device. Outside a multi-replica step, ``value`` itself.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return value
    return tf.reduce_max(context.all_gather(tf.reshape(value, [1]), axis=0))


class ActivationQuantizer(_Quantizer):
    """Symmetric, per tensor: batch ``max|X|`` in training, its EMA at inference.

    Under ``tf.distribute`` the batch is the global batch: the maximum over replicas.

    The moving average starts at the first training batch's range (not at an
    arbitrary constant), so a model evaluated after one step is already sane.

    ``unsigned``: for a tensor known to be non-negative, the grid ``[0, max X]``
    with ``2^b`` levels (:func:`ops.fake_quant`) instead of the paper's symmetric one.
    """

    def __init__(self, num_bits: int, ema_momentum: float = 0.99, unsigned: bool = False):
        self.num_bits = ops.check_bits(num_bits, "activation bits")
        if not 0.0 <= ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum!r}")
        self.ema_momentum = float(ema_momentum)
        self.unsigned = bool(unsigned)

    def build(self, tensor_shape, name, layer):
        # Every replica computes the same update (the range of the global batch, see __call__), so the
        # first replica's value is the value: defined under tf.distribute as on one device.
        ema = layer.add_weight(
            name + "_range_ema",
            shape=(),
            initializer=keras.initializers.Zeros(),
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        return {"range_ema": ema}

    def __call__(self, inputs, training, weights, **kwargs):
        ema = weights["range_ema"]
        if not training:
            return ops.fake_quant(inputs, ema, self.num_bits, straight_through=False, unsigned=self.unsigned)
        batch_range = global_batch_max(tf.cast(tf.stop_gradient(ops.per_tensor_scale(inputs)), ema.dtype))
        updated = tf.where(
            ema > 0.0,
            self.ema_momentum * ema + (1.0 - self.ema_momentum) * batch_range,
            batch_range,
        )
        ema.assign(updated)
        return ops.fake_quant(inputs, tf.cast(batch_range, inputs.dtype), self.num_bits, unsigned=self.unsigned)

    def get_config(self):
        return {"num_bits": self.num_bits, "ema_momentum": self.ema_momentum, "unsigned": self.unsigned}

    def __eq__(self, other):
        return isinstance(other, ActivationQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other

"""Fake quantization (paper §2.2): symmetric grids with a straight-through estimator.

A value ``x`` with scale ``s`` (its range) and ``b`` bits is mapped to
``round(x · q / s) · s / q`` with ``q = 2^(b-1) - 1`` and clipped to ``±s``: the
signed, narrow grid ``-q..q`` that TFLite's int8 kernels (and their low-bit
cousins) use with a zero point of 0.

The forward pass is TensorFlow's ``FakeQuantWithMinMaxVars`` ops with
``min = -s, max = s, narrow_range=True``, which put exactly that grid in the
graph: the TFLite converter reads these ops to produce an integer model. In
training the gradient is the identity (straight-through estimator); TF's own
gradient would zero values that fall a rounding error outside ``±s``.
"""

from __future__ import annotations

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf

MIN_BITS = 2
MAX_BITS = 8
# A range this small stands for "all zeros": the grid step becomes ~1e-12 and
# every value rounds to 0 instead of dividing by zero.
_TINY_SCALE = 1e-10


def check_bits(bits: int, what: str = "bits") -> int:
    """Returns ``bits`` as an int, or raises if it is outside 2..8."""
    if (isinstance(bits, bool) or not isinstance(bits, (int, float)) or int(bits) != bits
            or not MIN_BITS <= bits <= MAX_BITS):
        raise ValueError(
            f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}"
        )
    return int(bits)


def grid_max(bits: int) -> int:
    """The largest integer of the symmetric grid, 2^(b-1) - 1 (7 for 4 bits)."""
    return 2 ** (check_bits(bits) - 1) - 1


def per_channel_scale(w: tf.Tensor) -> tf.Tensor:
    """max|w| over every axis but the last (the output channels of Conv2D/Dense)."""
    return tf.reduce_max(tf.abs(w), axis=list(range(w.shape.rank - 1)))


def depthwise_scale(w: tf.Tensor) -> tf.Tensor:
    """max|w| of a depthwise kernel ``(*spatial, in_channels, multiplier)`` over the spatial axes.

    One range per output channel, shape ``(in_channels, multiplier)``: output
    channel ``c·M + m`` of a depthwise conv reads only ``w[..., c, m]``. The
    last axis alone (what tfmot's per-axis quantizers take) would be the
    multiplier, i.e. a single range for the whole kernel when ``M = 1``.
    """
    return tf.reduce_max(tf.abs(w), axis=list(range(w.shape.rank - 2)))


def per_tensor_scale(x: tf.Tensor) -> tf.Tensor:
    """max|x| over the whole tensor (two reductions cost half of ``reduce_max(abs(x))``)."""
    return tf.maximum(tf.reduce_max(x), -tf.reduce_min(x))


def _fake_quant_op(x, scale, bits: int, per_channel: bool, unsigned: bool = False):
    if x.dtype != tf.float32:  # the FakeQuant kernels take float32 only (bfloat16 under mixed precision)
        return tf.cast(_fake_quant_op(tf.cast(x, tf.float32), tf.cast(scale, tf.float32), bits, per_channel,
                                      unsigned), x.dtype)
    # The range may be read as bfloat16 (an auto-cast variable under mixed precision).
    scale = tf.maximum(tf.stop_gradient(tf.cast(scale, tf.float32)), _TINY_SCALE)
    # Unsigned: [0, s] on the full grid 0..2^b-1 (2^b levels); signed: [-s, s] on the narrow grid ±q.
    low = tf.zeros_like(scale) if unsigned else -scale
    if per_channel:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, low, scale, num_bits=bits, narrow_range=not unsigned
        )
    return tf.quantization.fake_quant_with_min_max_vars(
        x, low, scale, num_bits=bits, narrow_range=not unsigned
    )


def _straight_through(x, scale, bits: int, per_channel: bool, unsigned: bool = False):
    @tf.custom_gradient
    def quantize(inputs):
        return _fake_quant_op(inputs, scale, bits, per_channel, unsigned), lambda dy: dy

    return quantize(x)


def fake_quant(x, scale, bits: int, per_channel: bool = False, straight_through: bool = True,
               unsigned: bool = False):
    """Quantizes ``x`` on the symmetric ``bits`` grid of range ``±scale``.

    ``scale`` is a scalar, or one value per last-axis channel when
    ``per_channel``. With ``straight_through`` the gradient is the identity;
    without it the graph holds only the bare FakeQuant op (what export traces).
    ``unsigned`` (for tensors known to be non-negative, e.g. ReLU outputs): the
    range is ``[0, scale]`` with ``2^b`` levels ``k · scale / (2^b - 1)``,
    ``k = 0..2^b-1``, instead of the symmetric grid, of which a non-negative
    tensor uses only the ``2^(b-1)`` levels ``0..q``; negative values clip to 0.
    """
    bits = check_bits(bits)
    if straight_through:
        return _straight_through(x, scale, bits, per_channel, unsigned)
    return _fake_quant_op(x, scale, bits, per_channel, unsigned)


def fake_quant_per_channel(w, bits: int) -> tf.Tensor:
    """Weights: one scale per output channel (last axis), ``max|w|`` over the others.

    An all-zero channel stays zero. Gradients pass straight through.
    """
    w = tf.convert_to_tensor(w, dtype_hint=tf.float32)
    return fake_quant(w, per_channel_scale(w), bits, per_channel=True)


def fake_quant_depthwise(w, bits: int, straight_through: bool = True) -> tf.Tensor:
    """A depthwise kernel ``(*spatial, C, M)`` quantized with one range per output channel (C × M).

    The kernel is viewed as ``(*spatial, C·M)`` (TFLite's depthwise layout, whose
    per-channel axis is exactly these C·M channels), quantized per last-axis channel
    with range ``max|w|`` (:func:`depthwise_scale`), and reshaped back.
    """
    w = tf.convert_to_tensor(w, dtype_hint=tf.float32)
    shape = w.shape.as_list()
    if len(shape) < 3 or None in shape:
        raise ValueError(f"a depthwise kernel needs a static shape (*spatial, in, multiplier), got {w.shape}")
    flat = tf.reshape(w, shape[:-2] + [shape[-2] * shape[-1]])
    quantized = fake_quant(flat, per_channel_scale(flat), bits, per_channel=True, straight_through=straight_through)
    return tf.reshape(quantized, shape)


def fake_quant_per_tensor(x, bits: int, scale=None) -> tf.Tensor:
    """Activations: one scale for the whole tensor (``max|x|`` when not given)."""
    x = tf.convert_to_tensor(x, dtype_hint=tf.float32)
    if scale is None:
        scale = per_tensor_scale(x)
    return fake_quant(x, tf.cast(scale, x.dtype), bits, per_channel=False)

"""tfmot ``QuantizeConfig``s: which tensors of a layer are quantized, and how.

One config class serves every layer: a kernel quantizer (Conv2D, Conv1D,
DepthwiseConv2D, DepthwiseConv1D, Dense) and/or an output quantizer. Which layers get which bits is
decided on the whole graph in :mod:`tfq_noise.quantization.scheme`.
"""

from __future__ import annotations

import tfq_noise  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tfq_noise.quantization import ops
from tfq_noise.quantization.quantizers import ActivationQuantizer, WeightQuantizer

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig

# The attribute that holds each supported layer type's kernel. SeparableConv2D is not here:
# the scheme splits it into DepthwiseConv2D + Conv2D first (scheme.split_layers).
KERNEL_ATTRIBUTES = {
    "Conv2D": "kernel",
    "Conv1D": "kernel",
    "DepthwiseConv2D": "depthwise_kernel",
    "DepthwiseConv1D": "depthwise_kernel",
    "Dense": "kernel",
}
# Kernels whose output channels span the last two axes (in_channels × depth_multiplier):
# their per-channel range is taken over the spatial axes only.
DEPTHWISE_LAYERS = frozenset({"DepthwiseConv2D", "DepthwiseConv1D"})


class LayerQuantizeConfig(_QuantizeConfig):
    """Quantizes a layer's kernel (``weight_bits``) and/or its output (``output_bits``).

    ``None`` leaves that tensor in float: the output of a conv that a
    BatchNorm or ReLU follows is fused with them at inference and never exists
    on its own, so quantizing it would only add noise.
    """

    def __init__(
        self,
        weight_bits: int | None = None,
        per_channel: bool = True,
        output_bits: int | None = None,
        ema_momentum: float = 0.99,
        unsigned_output: bool = False,
    ):
        self.weight_bits = None if weight_bits is None else ops.check_bits(weight_bits, "weight bits")
        self.per_channel = bool(per_channel)
        self.output_bits = None if output_bits is None else ops.check_bits(output_bits, "activation bits")
        self.ema_momentum = float(ema_momentum)
        self.unsigned_output = bool(unsigned_output)

    def _kernel_attribute(self, layer):
        if self.weight_bits is None:
            return None
        attribute = KERNEL_ATTRIBUTES.get(type(layer).__name__)
        if attribute is None:
            raise ValueError(
                f"layer {layer.name} ({type(layer).__name__}) has no kernel this project "
                f"quantizes; supported: {sorted(KERNEL_ATTRIBUTES)}"
            )
        return attribute

    def get_weights_and_quantizers(self, layer):
        attribute = self._kernel_attribute(layer)
        if attribute is None:
            return []
        depthwise = type(layer).__name__ in DEPTHWISE_LAYERS
        return [(getattr(layer, attribute), WeightQuantizer(self.weight_bits, self.per_channel, depthwise))]

    def set_quantize_weights(self, layer, quantize_weights):
        attribute = self._kernel_attribute(layer)
        if attribute is not None:  # cast: under mixed precision the layer computes in bfloat16
            setattr(layer, attribute, tf.cast(quantize_weights[0], layer.compute_dtype))

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        if self.output_bits is None:
            return []
        return [ActivationQuantizer(self.output_bits, self.ema_momentum, self.unsigned_output)]

    def get_config(self):
        return {
            "weight_bits": self.weight_bits,
            "per_channel": self.per_channel,
            "output_bits": self.output_bits,
            "ema_momentum": self.ema_momentum,
            "unsigned_output": self.unsigned_output,
        }

    def __eq__(self, other):
        return isinstance(other, LayerQuantizeConfig) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return f"LayerQuantizeConfig({self.get_config()})"

"""The paper's quantization scheme applied to a whole tf_keras model.

What is quantized, decided on the model's graph:

* every Conv2D / Conv1D / Dense kernel: ``weight_bits``; Conv kernels
  per output channel, Dense kernels per tensor (TFLite does not convert
  per-channel Dense);
* every *input* of those layers (the paper's "activations"): ``activation_bits``
  of the layer that reads it, quantized where it is produced (an output
  quantizer on the producer, or on the model input);
* the first and last such layers (those that read the model input / write a
  model output): ``first_last_bits`` for both weights and input;
* any other tensor that exists in an integer model (a residual branch before
  its ``Add``, the logits): ``other_tensor_bits`` (8), because integer
  inference needs a range for every tensor and 8 bits is the most that
  converts; the paper does not quantize them;
* a tensor fused away at inference is left in float: Conv → BatchNorm, and
  Conv / BatchNorm / Add → ReLU.

BatchNorm is kept by default, after the quantized conv. Per-channel weight
quantization with range ``max|W|`` commutes with BN's per-channel scale, so when
the converter folds BN into the conv, each channel still holds at most
``2^b - 1`` values: keeping BN costs nothing at deployment, and it trains far
more stably than removing it. The paper removes BN for its CIFAR QAT network:
build the model without BN (``resnet20(batchnorm=False)``) to reproduce that.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import tfq_noise  # noqa: F401
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layout_transform
from tensorflow_model_optimization.python.core.quantization.keras import utils as tfmot_utils
from tensorflow_model_optimization.python.core.quantization.keras import quantize_registry
from tensorflow_model_optimization.python.core.quantization.keras import quantize_scheme
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_transforms
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import model_transformer
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import transforms as tfmot_transforms

from tfq_noise import keras, require_tf_keras_model
from tfq_noise.quantization import ops
from tfq_noise.quantization.configs import KERNEL_ATTRIBUTES, LayerQuantizeConfig
from tfq_noise.quantization.quantizers import ActivationQuantizer, WeightQuantizer

_qkeras = tfmot.quantization.keras

# Identity at inference, removed by the converter: look through them.
_TRANSPARENT = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                "GaussianDropout", "ActivityRegularization", "Flatten", "Reshape"}
_RELU_LIKE = {"ReLU"}


@dataclasses.dataclass(frozen=True)
class QuantizationSpec:
    """Bit-widths of the paper's scheme (W4/A4 with first and last layers W8/A8)."""

    weight_bits: int = 4
    activation_bits: int = 4
    first_last_bits: int | None = 8
    other_tensor_bits: int = 8
    ema_momentum: float = 0.99
    # Per-layer (weight_bits, activation_bits) by layer name, over everything else. A tensor read
    # by several layers is quantized once, at the largest of their activation bits.
    layer_bits: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        ops.check_bits(self.weight_bits, "weight_bits")
        ops.check_bits(self.activation_bits, "activation_bits")
        if self.first_last_bits is not None:
            ops.check_bits(self.first_last_bits, "first_last_bits")
        ops.check_bits(self.other_tensor_bits, "other_tensor_bits")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        for name, bits in self.layer_bits.items():
            if len(bits) != 2:
                raise ValueError(f"layer_bits[{name!r}] must be (weight_bits, activation_bits), got {bits!r}")
            ops.check_bits(bits[0], f"layer_bits[{name!r}] weight bits")
            ops.check_bits(bits[1], f"layer_bits[{name!r}] activation bits")


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What the scheme does to one layer (for tests, logs and reports)."""

    name: str
    layer_type: str
    weight_bits: int | None
    input_bits: int | None  # bits of the layer's input, for kernel layers
    output_bits: int | None  # bits of this layer's output quantizer, if any
    per_channel: bool


def _is_kernel_layer(layer) -> bool:
    return type(layer).__name__ in KERNEL_ATTRIBUTES


def _is_relu(layer) -> bool:
    name = type(layer).__name__
    if name in _RELU_LIKE:
        return True
    if name == "Activation":
        return getattr(layer.activation, "__name__", "") == "relu"
    return False


class _Graph:
    """Producer → consumer links of a functional model, through transparent layers."""

    def __init__(self, model):
        # Sequential.layers leaves the InputLayer out: take it from the model's inputs.
        inputs = [t._keras_history.layer for t in model.inputs]  # pylint: disable=protected-access
        self.layers = {layer.name: layer for layer in inputs + list(model.layers)}
        self.consumers: dict[str, list] = {name: [] for name in self.layers}
        for layer in self.layers.values():
            for node in layer._outbound_nodes:  # pylint: disable=protected-access
                consumer = node.outbound_layer
                if consumer.name in self.layers and consumer not in self.consumers[layer.name]:
                    self.consumers[layer.name].append(consumer)
        self.output_layers = {t._keras_history.layer.name for t in model.outputs}  # pylint: disable=protected-access
        self.input_layers = [layer for layer in self.layers.values() if type(layer).__name__ == "InputLayer"]

    def effective_consumers(self, name: str) -> list:
        found = []
        for consumer in self.consumers[name]:
            if type(consumer).__name__ in _TRANSPARENT:
                found.extend(self.effective_consumers(consumer.name))
            else:
                found.append(consumer)
        return found

    def reaches_output(self, name: str) -> bool:
        if name in self.output_layers:
            return True
        # A Concatenate that only joins outputs (per-task heads) keeps its inputs "last layers".
        return any(
            type(c).__name__ in _TRANSPARENT | {"Concatenate"} and self.reaches_output(c.name)
            for c in self.consumers[name]
        )


def plan_model(model, spec: QuantizationSpec) -> tuple[dict[str, LayerPlan], int]:
    """Decides bits for every layer; returns the plans and the model-input bits."""
    graph = _Graph(model)
    first = {c.name for inp in graph.input_layers for c in graph.effective_consumers(inp.name) if _is_kernel_layer(c)}
    last = {name for name, layer in graph.layers.items() if _is_kernel_layer(layer) and graph.reaches_output(name)}
    unknown = set(spec.layer_bits) - {n for n, l in graph.layers.items() if _is_kernel_layer(l)}
    if unknown:
        raise ValueError(f"layer_bits names layers that are not Conv/Dense layers of the model: {sorted(unknown)}")

    def kernel_bits(layer) -> tuple[int, int]:
        if layer.name in spec.layer_bits:
            return tuple(spec.layer_bits[layer.name])
        if spec.first_last_bits is not None and (layer.name in first or layer.name in last):
            return spec.first_last_bits, spec.first_last_bits
        return spec.weight_bits, spec.activation_bits

    def output_bits(name: str) -> int | None:
        layer = graph.layers[name]
        consumers = graph.effective_consumers(name)
        if len(consumers) == 1 and not graph.reaches_output(name):
            follower = consumers[0]
            if _is_kernel_layer(layer) and type(follower).__name__ == "BatchNormalization":
                return None  # folded into the conv
            if _is_relu(follower) and (
                _is_kernel_layer(layer) or type(layer).__name__ in ("BatchNormalization", "Add")
            ):
                return None  # fused activation
        reader_bits = [kernel_bits(c)[1] for c in consumers if _is_kernel_layer(c)]
        if reader_bits:
            return max(reader_bits)
        return spec.other_tensor_bits

    plans = {}
    for name, layer in graph.layers.items():
        layer_type = type(layer).__name__
        if layer_type == "InputLayer" or layer_type in _TRANSPARENT:
            continue
        if _is_kernel_layer(layer):
            w_bits, a_bits = kernel_bits(layer)
            plans[name] = LayerPlan(name, layer_type, w_bits, a_bits, output_bits(name), layer_type != "Dense")
        elif layer.weights and layer_type not in ("BatchNormalization",):
            raise ValueError(
                f"layer {name} ({layer_type}) has weights this scheme cannot quantize; "
                f"supported kernels: {sorted(KERNEL_ATTRIBUTES)}"
            )
        else:
            plans[name] = LayerPlan(name, layer_type, None, None, output_bits(name), False)
    input_bits = [
        output_bits(inp.name) or spec.other_tensor_bits for inp in graph.input_layers
    ]
    return plans, max(input_bits) if input_bits else spec.other_tensor_bits


class _QuantizeNothingRegistry(quantize_registry.QuantizeRegistry):
    """Every layer's config comes from the plan; nothing is added implicitly."""

    def get_quantize_config(self, layer):
        return None

    def supports(self, layer):
        return False


class _InputQuantize(default_8bit_transforms.InputLayerQuantize):
    """InputLayer → QuantizeLayer with the paper's activation quantizer."""

    def __init__(self, bits: int, ema_momentum: float):
        super().__init__()
        self._bits, self._ema_momentum = bits, ema_momentum

    def replacement(self, match_layer):
        quant_layer = quantize_layer.QuantizeLayer(ActivationQuantizer(self._bits, self._ema_momentum))
        config = tfmot_utils.serialize_layer(quant_layer, use_legacy_format=True)
        config["name"] = quant_layer.name
        return tfmot_transforms.LayerNode(config, input_layers=[match_layer])

    def custom_objects(self):
        return {"QuantizeLayer": quantize_layer.QuantizeLayer, **custom_objects()}


class _PaperLayoutTransform(quantize_layout_transform.QuantizeLayoutTransform):
    def __init__(self, input_bits: int, ema_momentum: float):
        self._input_bits, self._ema_momentum = input_bits, ema_momentum

    def apply(self, model, layer_quantize_map):
        return model_transformer.ModelTransformer(
            model, [_InputQuantize(self._input_bits, self._ema_momentum)],
            set(layer_quantize_map.keys()), layer_quantize_map,
        ).transform()


class PaperQuantizeScheme(quantize_scheme.QuantizeScheme):
    def __init__(self, input_bits: int, ema_momentum: float):
        self._transform = _PaperLayoutTransform(input_bits, ema_momentum)

    def get_layout_transformer(self):
        return self._transform

    def get_quantize_registry(self):
        return _QuantizeNothingRegistry()


def custom_objects() -> dict:
    """Classes a saved quantized model needs to be loaded (with ``quantize_scope``)."""
    return {
        "WeightQuantizer": WeightQuantizer,
        "ActivationQuantizer": ActivationQuantizer,
        "LayerQuantizeConfig": LayerQuantizeConfig,
    }


def quantize_scope():
    """``with quantize_scope(): keras.models.load_model(...)`` for this project's models."""
    return _qkeras.quantize_scope(custom_objects())


def _paper_quantize(model, spec: QuantizationSpec):
    plans, input_bits = plan_model(model, spec)

    def annotate(layer):
        plan = plans.get(layer.name)
        if plan is None or (plan.weight_bits is None and plan.output_bits is None):
            return layer.__class__.from_config(layer.get_config())
        config = LayerQuantizeConfig(plan.weight_bits, plan.per_channel, plan.output_bits, spec.ema_momentum)
        return _qkeras.quantize_annotate_layer(layer.__class__.from_config(layer.get_config()), config)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        return _qkeras.quantize_apply(annotated, scheme=PaperQuantizeScheme(input_bits, spec.ema_momentum))


def _tfmot_default_8bit(model, spec: QuantizationSpec):
    return _qkeras.quantize_model(model)


def _tfmot_n_bit(model, spec: QuantizationSpec):
    scheme = _qkeras.experimental.default_n_bit.DefaultNBitQuantizeScheme(
        num_bits_weight=spec.weight_bits, num_bits_activation=spec.activation_bits
    )
    return _qkeras.quantize_apply(_qkeras.quantize_annotate_model(model), scheme=scheme)


# Quantization schemes by name: this project's (the paper's) and tfmot's, as peers.
SCHEMES = {
    "paper": _paper_quantize,
    "tfmot_default_8bit": _tfmot_default_8bit,
    "tfmot_n_bit": _tfmot_n_bit,
}


def quantize_model(
    model,
    weight_bits: int = 4,
    activation_bits: int = 4,
    first_last_bits: int | None = 8,
    *,
    scheme: str = "paper",
    other_tensor_bits: int = 8,
    ema_momentum: float = 0.99,
    layer_bits: Mapping[str, tuple[int, int]] | None = None,
):
    """Returns a trainable quantization-aware copy of a tf_keras ``model``.

    ``scheme``: ``paper`` (this project's, see the module docstring),
    ``tfmot_default_8bit`` (tfmot's stock ``quantize_model``, 8 bits, bits
    arguments ignored) or ``tfmot_n_bit`` (tfmot's experimental n-bit scheme,
    with ``weight_bits``/``activation_bits`` everywhere).
    """
    require_tf_keras_model(model)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    spec = QuantizationSpec(
        weight_bits, activation_bits, first_last_bits, other_tensor_bits, ema_momentum, dict(layer_bits or {})
    )
    return SCHEMES[scheme](model, spec)

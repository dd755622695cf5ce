"""The paper's quantization scheme applied to a whole tf_keras model.

What is quantized, decided on the model's graph:

* every Conv2D / Conv1D / DepthwiseConv2D / DepthwiseConv1D / Dense kernel:
  ``weight_bits``; Conv kernels per output channel (a depthwise kernel
  ``(kh, kw, C, M)`` has ``C × M`` of them), Dense kernels per tensor (TFLite
  does not convert per-channel Dense); a SeparableConv2D is first split into
  DepthwiseConv2D ``<name>_depthwise`` + 1×1 Conv2D ``<name>_pointwise``
  (:func:`split_layers`), so the tensor between them is quantized too; a
  Conv/Dense with an activation TFLite cannot fuse (swish, sigmoid, softmax...)
  is split into the linear layer + ``Activation`` ``<name>_activation``, so the
  tensor before the activation gets a range too;
* every *input* of those layers (the paper's "activations"): ``activation_bits``
  of the layer that reads it, quantized where it is produced (an output
  quantizer on the producer, or on the model input);
* the first and last such layers (those that read the model input / write a
  model output): ``first_last_bits`` for both weights and input. The first is
  found through input preprocessing (Rescaling, Normalization, ZeroPadding...),
  the last through output activations (Softmax, Activation, ReLU);
* any other tensor that exists in an integer model (a residual branch before
  its ``Add``, the logits): ``other_tensor_bits`` (8), because integer
  inference needs a range for every tensor and 8 bits is the most that
  converts; the paper does not quantize them;
* a tensor fused away at inference is left in float: Conv → BatchNorm, and
  Conv / BatchNorm / Add → ReLU or ReLU6.

Other layers without weights (pooling, Add, Multiply, Concatenate, activations,
Rescaling...) only get an output quantizer where their output is needed; the
layers with weights but no kernel that are kept in float are BatchNormalization
and Normalization. Any other layer with weights raises a ``ValueError`` naming it.

BatchNorm is kept by default, after the quantized conv. Per-channel weight
quantization with range ``max|W|`` commutes with BN's per-channel scale, so when
the converter folds BN into the conv, each channel still holds at most
``2^b - 1`` values: keeping BN costs nothing at deployment, and it trains far
more stably than removing it. The paper removes BN for its CIFAR QAT network:
build the model without BN (``resnet20(batchnorm=False)``) to reproduce that.
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
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

# Identity at inference or a pure re-layout of the same values (the converter removes them, or
# gives their output the range of their input): look through them.
_TRANSPARENT = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Flatten", "Reshape",
                "ZeroPadding1D", "ZeroPadding2D"}
# Input preprocessing: the first Conv/Dense is looked for through them (their outputs are quantized
# as any other tensor, at ``other_tensor_bits`` unless a Conv/Dense reads them).
_PREPROCESSING = {"Rescaling", "Normalization", "Resizing", "CenterCrop", "Cropping1D", "Cropping2D"}
# Output activations: a Conv/Dense that only they separate from a model output is a last layer.
_OUTPUT_ACTIVATIONS = {"Softmax", "Activation", "ReLU"}
# Layers with weights but no kernel: kept in float (BN is folded into the conv by the converter,
# Normalization's mean/variance become constants of a float-free Sub/Mul in the integer model).
_WEIGHTS_WITHOUT_KERNEL = {"BatchNormalization", "Normalization"}


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
    # Quantize tensors known to be non-negative (ReLU/ReLU6/sigmoid/softmax outputs) on the unsigned
    # grid [0, max] with 2^b levels instead of the paper's symmetric one (which gives them 2^(b-1)).
    unsigned_activations: bool = False

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
    unsigned_output: bool = False  # the output quantizer uses the unsigned grid [0, max]


def _is_kernel_layer(layer) -> bool:
    return type(layer).__name__ in KERNEL_ATTRIBUTES


def _is_relu(layer) -> bool:
    """A ReLU or ReLU6 that TFLite fuses into the conv/add before it (``ReLU(6.)``, ``Activation("relu6")``)."""
    name = type(layer).__name__
    if name == "ReLU":
        config = layer.get_config()
        max_value = config.get("max_value")
        return (float(config.get("negative_slope") or 0.0) == 0.0 and float(config.get("threshold") or 0.0) == 0.0
                and (max_value is None or float(max_value) == 6.0))
    if name == "Activation":
        return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
    return False


_NON_NEGATIVE_ACTIVATIONS = {"relu", "relu6", "sigmoid", "softmax", "hard_sigmoid", "exponential"}


def _non_negative_output(layer) -> bool:
    """The layer's output is ≥ 0 whatever its input: a ReLU(6), or a layer ending in such an activation."""
    layer_type = type(layer).__name__
    if layer_type == "ReLU":
        config = layer.get_config()
        return float(config.get("negative_slope") or 0.0) == 0.0 and float(config.get("threshold") or 0.0) >= 0.0
    if layer_type == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") in _NON_NEGATIVE_ACTIVATIONS


def _unsupported_layer_error(layer) -> ValueError:
    layer_type = type(layer).__name__
    if isinstance(layer, keras.Model):
        return ValueError(
            f"layer {layer.name} ({layer_type}) is a nested model: the scheme quantizes the layers of one flat "
            "functional or Sequential model. Build the model flat (call the inner model's layers on the outer "
            "model's tensors, e.g. keras.applications.X(input_tensor=...)) or quantize the inner model alone."
        )
    return ValueError(
        f"layer {layer.name} ({layer_type}) has weights this scheme cannot quantize. Layers with quantized "
        f"kernels: {sorted(KERNEL_ATTRIBUTES)} and SeparableConv2D (split into depthwise + pointwise); layers "
        f"with weights kept in float: {sorted(_WEIGHTS_WITHOUT_KERNEL)}; layers without weights pass through. "
        f"Replace {layer_type} by supported layers, or quantize the model with scheme='tfmot_default_8bit' "
        "(tfmot's own registry), or leave this model unquantized."
    )


class _SplitSeparableConv(tfmot_transforms.Transform):
    """SeparableConv2D ``name`` → DepthwiseConv2D ``name_depthwise`` + 1×1 Conv2D ``name_pointwise``.

    The same computation (``tf.nn.separable_conv2d`` is exactly these two convs), but the tensor
    between them becomes a layer output, so it gets an activation quantizer like any conv input
    (TFLite converts a SeparableConv2D to these two ops and needs its range). Deterministic
    names keep ``layer_bits`` and weight files valid across builds. Same as tfmot's
    ``SeparableConvQuantize``, which names the new layers ``depthwise_conv2d_<n>``.
    """

    def pattern(self):
        return tfmot_transforms.LayerPattern("SeparableConv2D")

    def replacement(self, match_layer):
        config = match_layer.layer["config"]
        weights = list(match_layer.weights.values())
        depthwise = keras.layers.DepthwiseConv2D(
            kernel_size=config["kernel_size"], strides=config["strides"], padding=config["padding"],
            depth_multiplier=config["depth_multiplier"], data_format=config["data_format"],
            dilation_rate=config["dilation_rate"], activation=None, use_bias=False,
            depthwise_initializer=config["depthwise_initializer"],
            depthwise_regularizer=config["depthwise_regularizer"],
            depthwise_constraint=config["depthwise_constraint"],
            trainable=config["trainable"], name=f"{config['name']}_depthwise",
        )
        pointwise = keras.layers.Conv2D(
            filters=config["filters"], kernel_size=1, strides=1, padding="valid",
            data_format=config["data_format"], activation=config["activation"], use_bias=config["use_bias"],
            kernel_initializer=config["pointwise_initializer"], bias_initializer=config["bias_initializer"],
            kernel_regularizer=config["pointwise_regularizer"], bias_regularizer=config["bias_regularizer"],
            activity_regularizer=config["activity_regularizer"], kernel_constraint=config["pointwise_constraint"],
            bias_constraint=config["bias_constraint"], trainable=config["trainable"],
            name=f"{config['name']}_pointwise",
        )
        nodes = []
        for layer, layer_weights in ((depthwise, weights[:1]), (pointwise, weights[1:])):
            layer_config = tfmot_utils.serialize_layer(layer, use_legacy_format=True)
            layer_config["name"] = layer.name
            names = ["depthwise_kernel:0"] if layer is depthwise else ["kernel:0", "bias:0"][:len(layer_weights)]
            nodes.append((layer_config, dict(zip(names, layer_weights))))
        depthwise_node = tfmot_transforms.LayerNode(nodes[0][0], weights=nodes[0][1])
        return tfmot_transforms.LayerNode(nodes[1][0], weights=nodes[1][1], input_layers=[depthwise_node])


# Activations TFLite fuses into the CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED before them.
_FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")


class _SplitActivation(tfmot_transforms.Transform):
    """Conv/Dense ``name`` with a non-fusable activation → the same layer, linear, + ``Activation`` ``name_activation``.

    A kernel layer that applies swish, sigmoid, softmax, tanh... inside itself has only its
    activated output as a layer output, so that is all the scheme could quantize; TFLite cannot
    fuse such an activation into the convolution, so the tensor between them exists in the
    integer model with no range and the converter leaves the layer in float (EfficientNet's
    squeeze-and-excitation convolutions, ``Dense(activation="softmax")`` classifiers). Split,
    the pre-activation tensor is a layer output and gets an 8-bit range like any other tensor.
    The kernel layer keeps its name, so ``layer_bits`` and weight files stay valid.
    """

    def pattern(self):
        not_fusable = "(?!(?:" + "|".join(_FUSABLE_ACTIVATIONS) + ")$).*"
        return tfmot_transforms.LayerPattern("|".join(KERNEL_ATTRIBUTES), config={"activation": not_fusable})

    def replacement(self, match_layer):
        layer = copy.deepcopy(match_layer.layer)
        activation = layer["config"]["activation"]
        layer["config"]["activation"] = "linear"
        name = layer["config"]["name"]
        linear = tfmot_transforms.LayerNode(layer, weights=match_layer.weights, input_layers=match_layer.input_layers,
                                            metadata=match_layer.metadata)
        act = keras.layers.Activation(activation, name=f"{name}_activation")
        act_config = tfmot_utils.serialize_layer(act, use_legacy_format=True)
        act_config["name"] = act.name
        return tfmot_transforms.LayerNode(act_config, input_layers=[linear])


def _needs_split(layer) -> bool:
    layer_type = type(layer).__name__
    if layer_type == "SeparableConv2D":
        return True
    if layer_type in KERNEL_ATTRIBUTES:
        activation = layer.get_config().get("activation", "linear")
        return activation not in _FUSABLE_ACTIVATIONS
    return False


def split_layers(model):
    """``model`` with the layers the scheme cannot quantize whole split in two, weights kept.

    * SeparableConv2D → DepthwiseConv2D + 1×1 Conv2D (:class:`_SplitSeparableConv`);
    * Conv/Dense with an activation TFLite cannot fuse (swish, sigmoid, softmax...) → the
      linear layer + ``Activation`` (:class:`_SplitActivation`).

    Returns ``model`` itself when there is nothing to split.
    """
    if not any(_needs_split(layer) for layer in model.layers):
        return model
    transforms = [_SplitSeparableConv(), _SplitActivation()]
    transformed, _ = model_transformer.ModelTransformer(model, transforms).transform()
    return transformed


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

    def first_kernel_layers(self, name: str) -> list:
        """The Conv/Dense layers reading ``name``'s output, through transparent and preprocessing layers."""
        found = []
        for consumer in self.consumers[name]:
            consumer_type = type(consumer).__name__
            if consumer_type in _TRANSPARENT or consumer_type in _PREPROCESSING:
                found.extend(self.first_kernel_layers(consumer.name))
            elif _is_kernel_layer(consumer):
                found.append(consumer)
        return found

    def is_last(self, name: str) -> bool:
        """Writes a model output, seen through transparent layers, output activations and a final Concatenate."""
        if name in self.output_layers:
            return True
        return any(
            type(c).__name__ in _TRANSPARENT | _OUTPUT_ACTIVATIONS | {"Concatenate"} and self.is_last(c.name)
            for c in self.consumers[name]
        )

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
    graph = _Graph(split_layers(model))
    first = {c.name for inp in graph.input_layers for c in graph.first_kernel_layers(inp.name)}
    last = {name for name, layer in graph.layers.items() if _is_kernel_layer(layer) and graph.is_last(name)}
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

    def unsigned(layer) -> bool:
        return spec.unsigned_activations and _non_negative_output(layer)

    plans = {}
    for name, layer in graph.layers.items():
        layer_type = type(layer).__name__
        if layer_type == "InputLayer" or layer_type in _TRANSPARENT:
            continue
        if _is_kernel_layer(layer):
            w_bits, a_bits = kernel_bits(layer)
            plans[name] = LayerPlan(name, layer_type, w_bits, a_bits, output_bits(name), layer_type != "Dense",
                                    unsigned(layer))
        elif (layer.weights and layer_type not in _WEIGHTS_WITHOUT_KERNEL) or isinstance(layer, keras.Model):
            raise _unsupported_layer_error(layer)
        else:
            plans[name] = LayerPlan(name, layer_type, None, None, output_bits(name), False, unsigned(layer))
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
    source = model
    model = split_layers(model)
    plans, input_bits = plan_model(model, spec)

    def annotate(layer):
        plan = plans.get(layer.name)
        if plan is None or (plan.weight_bits is None and plan.output_bits is None):
            return layer.__class__.from_config(layer.get_config())
        config = LayerQuantizeConfig(plan.weight_bits, plan.per_channel, plan.output_bits, spec.ema_momentum,
                                     plan.unsigned_output)
        return _qkeras.quantize_annotate_layer(layer.__class__.from_config(layer.get_config()), config)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        quantized = _qkeras.quantize_apply(annotated, scheme=PaperQuantizeScheme(input_bits, spec.ema_momentum))
    # What it was made from, for an export that rebuilds it at 8-bit activations. Kept beside the model, not
    # on it: an attribute would be one more model to Keras's weight saving and loading.
    SOURCES[quantized] = (source, spec, plans, input_bits)
    return quantized


# A quantized model of the paper's scheme -> (float model, QuantizationSpec, layer plans, input bits).
SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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
    unsigned_activations: bool = False,
):
    """Returns a trainable quantization-aware copy of a tf_keras ``model``.

    ``scheme``: ``paper`` (this project's, see the module docstring),
    ``tfmot_default_8bit`` (tfmot's stock ``quantize_model``, 8 bits, bits
    arguments ignored) or ``tfmot_n_bit`` (tfmot's experimental n-bit scheme,
    with ``weight_bits``/``activation_bits`` everywhere).

    ``unsigned_activations`` (paper scheme only; off by default, as in the paper): tensors
    that are non-negative by construction (outputs of ReLU, ReLU6, sigmoid, softmax, and of
    Conv/Dense layers with those activations) are quantized on ``[0, max]`` with ``2^b``
    levels, where the symmetric grid leaves them ``2^(b-1)`` (8 at A4).
    """
    require_tf_keras_model(model)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    spec = QuantizationSpec(
        weight_bits, activation_bits, first_last_bits, other_tensor_bits, ema_momentum, dict(layer_bits or {}),
        unsigned_activations,
    )
    return SCHEMES[scheme](model, spec)

"""TFLite conversion: float32, post-training int8, QAT int8, and the W<b>/A8 rebuild of low-bit activations.

Activations below 8 bits (the paper's W4/A4) do not convert in TF 2.21. Such a
run is exported as W<b>/A8 (:func:`build_a8_model`): the same model is built
with 8-bit activations (same weight bits, per layer), the trained weights are
copied (the variable structure is identical), and the 8-bit activation ranges
are re-estimated (:func:`reestimate_activation_ranges`) on ``--range_batches``
(32) batches of the run's training images, of the run's batch size. Each batch
is a training-mode forward pass, so every activation quantizer sees its tensor
exactly as in QAT (quantized on the current batch's range, upstream tensors
quantized too), with BatchNorm frozen (``trainable = False`` makes tf_keras BN
use its moving statistics) and Dropout off (rate 0); the quantizer records
``max|X|`` of the batch. The range kept is the mean of these batch maxima: the
quantity the training EMA tracks, without the EMA's dependence on where it
started. ``--range_batches=0`` keeps the ranges learned by the W4/A4 training
instead.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from tfq_noise import keras
from tfq_noise.deploy.flatbuffer import ExportError


# ----------------------------------------------------------------------------- conversion


def convert_float32(model) -> bytes:
    """The float model as a float32 .tflite (dynamic batch)."""
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def convert_ptq_int8(model, calibration_images: np.ndarray) -> bytes:
    """Full-integer post-training quantization, calibrated on normalized float images [N, H, W, C]."""
    images = np.asarray(calibration_images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ExportError(f"PTQ needs calibration images [N, H, W, C], got shape {images.shape}")

    def representative_dataset():
        for image in images:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def convert_qat_int8(model) -> bytes:
    """Full-integer conversion of a quantization-aware model from its FakeQuant ranges (no data)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


AEQ_WEIGHT_BITS = {"aeq_w8a8": 8, "aeq_w4a8": 4}
AEQ_PACKAGE = "litert-quantizer"  # formerly ai-edge-quantizer (0.10.0); same API, imported as litert_quantizer
AEQ_TOOL = f"{AEQ_PACKAGE} static recipe"


def _litert_quantizer():
    try:
        from litert_quantizer import qtyping, quantizer
    except ImportError:
        raise ExportError(f"the aeq_* kinds need {AEQ_PACKAGE}: pip install {AEQ_PACKAGE}==0.11.0") from None
    return qtyping, quantizer


def aeq_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(AEQ_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def convert_aeq(float_tflite: bytes, calibration_images: np.ndarray, weight_bits: int) -> bytes:
    """Static post-training quantization of a float32 .tflite with ``litert-quantizer`` (the maintained
    ``ai-edge-quantizer``; module ``litert_quantizer``).

    Its static recipe on every supported op (``Quantizer.add_static_config``, the configuration
    ``recipe.static_wi8_ai8()`` spells out for 8 bits, here with ``weight_bits``): int8 activations
    (min/max ranges calibrated on the normalized float images, one per step), ``weight_bits`` weights per
    output channel (4: packed ``INT4`` tensors, the W4A8 recipe).
    """
    from ai_edge_litert.interpreter import Interpreter

    qtyping, quantizer = _litert_quantizer()
    images = np.asarray(calibration_images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ExportError(f"{AEQ_PACKAGE} needs calibration images [N, H, W, C], got shape {images.shape}")
    signatures = Interpreter(model_content=float_tflite).get_signature_list()
    if len(signatures) != 1:
        raise ExportError(f"{AEQ_PACKAGE} export needs one signature, the float model has {list(signatures)}")
    (key, signature), = signatures.items()
    (input_name,) = signature["inputs"]
    qt = quantizer.Quantizer(bytearray(float_tflite))
    qt.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                         activation_num_bits=8, weight_num_bits=int(weight_bits))
    calibration = qt.calibrate({key: [{input_name: image[None]} for image in images]})
    return bytes(qt.quantize(calibration).quantized_model)


def convert(model, kind: str, calibration_images: np.ndarray | None = None) -> bytes:
    """``model`` converted as ``kind`` (float32, ptq_int8, qat_int8, aeq_w8a8, aeq_w4a8);
    any failure is an :class:`ExportError`."""
    try:
        if kind == "float32":
            tflite = convert_float32(model)
        elif kind in ("ptq_int8", *AEQ_WEIGHT_BITS):
            if calibration_images is None:
                raise ExportError(f"{kind} needs calibration images")
            if kind == "ptq_int8":
                tflite = convert_ptq_int8(model, calibration_images)
            else:
                tflite = convert_aeq(convert_float32(model), calibration_images, AEQ_WEIGHT_BITS[kind])
        elif kind == "qat_int8":
            tflite = convert_qat_int8(model)
        else:
            raise ExportError(f"unknown conversion kind {kind!r}; choose one of float32, ptq_int8, qat_int8, "
                              f"{', '.join(AEQ_WEIGHT_BITS)}")
    except ExportError:
        raise
    except Exception as error:  # the converter raises many types; keep its first lines only
        first = "\n".join(str(error).splitlines()[:8])
        raise ExportError(f"TFLite conversion ({kind}) failed: {type(error).__name__}: {first}") from None
    return tflite


# ----------------------------------------------------------------------------- A8 re-estimation


def _all_layers(model):
    """Every layer, including those wrapped by tfmot's QuantizeWrapper / pruning wrappers."""
    for layer in model.layers:
        yield layer
        inner = getattr(layer, "layer", None)
        if inner is not None and isinstance(inner, keras.layers.Layer):
            yield inner


def kernel_layer_names(model) -> list[str]:
    """Names of the Conv/Dense layers (inside quantization wrappers too)."""
    from tfq_noise.quantization.configs import KERNEL_ATTRIBUTES

    return [layer.name for layer in _all_layers(model) if type(layer).__name__ in KERNEL_ATTRIBUTES]


def range_variables(model) -> list:
    """The ActivationQuantizers' EMA range variables (``*_range_ema``)."""
    return [v for v in model.variables if re.search(r"range_ema(:\d+)?$", v.name)]


def freeze_for_range_estimation(model) -> None:
    """BatchNorm uses its moving statistics even when called with ``training=True``; Dropout is off."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        if isinstance(layer, (keras.layers.Dropout,)):
            layer.rate = 0.0


def _batchnorm_statistics(model) -> list:
    return [v for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def reestimate_activation_ranges(model, images: np.ndarray, batch_size: int, max_batches: int) -> dict:
    """Sets every activation range to the mean over batches of the batch ``max|X|`` (see module doc).

    ``images``: normalized float images; the first ``max_batches`` batches of
    ``batch_size`` are used (a last partial batch only if it is the only one).
    Returns ``{variable name: new range}``. BatchNorm statistics are checked
    to be unchanged.
    """
    variables = range_variables(model)
    if not variables:
        raise ExportError("the model has no activation range variables (*_range_ema) to re-estimate")
    freeze_for_range_estimation(model)
    bn_before = [v.numpy().copy() for v in _batchnorm_statistics(model)]
    n_batches = max(1, min(max_batches, len(images) // batch_size))
    forward = tf.function(lambda x: model(x, training=True))
    sums = np.zeros(len(variables), np.float64)
    for b in range(n_batches):
        batch = images[b * batch_size: (b + 1) * batch_size]
        for v in variables:
            v.assign(tf.zeros_like(v))  # an EMA at 0 takes the batch range as it is
        forward(tf.constant(batch))
        sums += np.array([float(v.numpy()) for v in variables])
    means = sums / n_batches
    for v, value in zip(variables, means):
        v.assign(value)
    bn_after = [v.numpy() for v in _batchnorm_statistics(model)]
    if any(not np.array_equal(a, b) for a, b in zip(bn_before, bn_after)):
        raise ExportError("BatchNorm moving statistics changed during range re-estimation")
    return {"batches": int(n_batches), "batch_size": int(len(images[:batch_size])),
            "ranges": {v.name: float(m) for v, m in zip(variables, means)}}


def is_qat_method(method: str) -> bool:
    from tfq_noise.methods import method_names

    return "quantization" in method_names(method)


def _float_model_and_spec(config, final):
    from tfq_noise.models import build_model
    from tfq_noise.quantization import QuantizationSpec

    recipe = config.recipe
    kwargs = {**dict(config.model_kwargs), **recipe.model_kwargs()}
    model = build_model(config.model, num_classes=final["num_outputs"], input_shape=tuple(final["input_shape"]),
                        **kwargs)
    hp = config.resolved_hparams
    spec = QuantizationSpec(
        int(hp["weight_bits"]), int(hp["activation_bits"]),
        None if hp["first_last_bits"] is None else int(hp["first_last_bits"]),
        ema_momentum=float(hp["ema_momentum"]),
        layer_bits={k: tuple(v) for k, v in dict(hp["layer_bits"]).items()},
    )
    return model, spec


def quantization_plan(config, final) -> tuple[dict, int]:
    """The paper scheme's per-layer plan of a QAT run, and its model-input bits."""
    from tfq_noise.quantization import plan_model

    model, spec = _float_model_and_spec(config, final)
    return plan_model(model, spec)


def low_bit_weight_layers(config, final) -> dict[str, int]:
    plans, _ = quantization_plan(config, final)
    return {name: p.weight_bits for name, p in plans.items() if p.weight_bits is not None and p.weight_bits < 8}


def activation_bits_below_8(config, final) -> bool:
    plans, input_bits = quantization_plan(config, final)
    bits = [input_bits] + [p.output_bits for p in plans.values() if p.output_bits is not None]
    return min(bits) < 8


def a8_config(config, final):
    """The run's config with every activation at 8 bits and every kernel at its trained weight bits."""
    plans, _ = quantization_plan(config, final)
    hp = dict(config.resolved_hparams)
    hp["activation_bits"] = 8
    hp["layer_bits"] = {name: [p.weight_bits, 8] for name, p in plans.items() if p.weight_bits is not None}
    return dataclasses.replace(config, hparams=hp)


def _normalized_name(name: str) -> str:
    """A variable name without Keras' uniquifying ``_<n>`` suffixes (``quantize_layer_1`` → ``quantize_layer``)."""
    return re.sub(r"_\d+", "", name)


def copy_weights(source, target) -> None:
    """Copies every variable (weights, BN statistics, ranges) between two models of the same structure."""
    a, b = source.weights, target.weights
    a_sig = [(_normalized_name(v.name), tuple(v.shape)) for v in a]
    b_sig = [(_normalized_name(v.name), tuple(v.shape)) for v in b]
    if a_sig != b_sig:
        diff = next(((x, y) for x, y in zip(a_sig, b_sig) if x != y), (len(a_sig), len(b_sig)))
        raise ExportError(f"the A8 model's variables differ from the trained model's: first difference {diff}")
    target.set_weights(source.get_weights())


def _plan_of(plans: dict, name: str):
    """The plan of layer ``name`` of a rebuilt model. A layer Keras named itself (``global_average_pooling2d_4``)
    gets another ``_<n>`` suffix at each build in a process: matched on the name without it, if that is unique."""
    if name in plans:
        return plans[name]
    base = re.sub(r"_\d+$", "", name)
    matches = [plan for other, plan in plans.items() if re.sub(r"_\d+$", "", other) == base]
    if len(matches) != 1:
        raise ExportError(f"cannot match the rebuilt model's layer {name!r} to one layer of the quantization plan "
                          f"({len(matches)} candidates): name the model's layers explicitly")
    return matches[0]


def keep_trained_grid(model8, config, final) -> dict:
    """Gives each low-bit activation of the A8 model the trained grid's step, in int8.

    A ``b``-bit activation with learned range ``r`` sits on the grid
    ``k · r / q``, ``q = 2^(b-1) - 1``. Its 8-bit range becomes ``r · 127 / q``:
    the same step, stored in int8, so the integer model computes the trained
    rounding; only values beyond ``±r`` (which the trained model clips and
    the int8 tensor keeps, up to ``127 / q`` times further) differ. The
    learned ranges must be in ``model8`` (copied from the trained model).
    Returns ``{variable name: new range}``.
    """
    plans, input_bits = quantization_plan(config, final)
    changed = {}
    for v in range_variables(model8):
        match = re.match(r"(?:quant_(.*)/output|quantize_layer/quantize_layer)_range_ema", v.name)
        if not match:
            continue
        bits = input_bits if match.group(1) is None else _plan_of(plans, match.group(1)).output_bits
        if bits is not None and bits < 8:
            v.assign(v * 127.0 / (2 ** (bits - 1) - 1))
            changed[v.name] = float(v.numpy())
    return changed


def build_a8_model(trained_model, config, final):
    from tfq_noise.train import build_run_model

    config8 = a8_config(config, final)
    model8 = build_run_model(config8, final["input_shape"], final["num_outputs"])
    copy_weights(trained_model, model8)
    return model8, config8

"""Exports a finished run as a verified TFLite model (LiteRT), with a JSON report beside it.

    python -m tfq_noise.export --run_dir=results/<exp>/<run> \\
        [--output=tflite_models/<name>.tflite] [--kind=auto|float32|qat_int8|ptq_int8]

Kinds:

* ``float32`` (float runs): the float model as it is.
* ``ptq_int8`` (float runs): post-training full-integer quantization, the peer
  a user would otherwise pick: int8 weights (per channel for convolutions),
  int8 activations calibrated on ``--ptq_images`` (500) training images of the
  run (normalized as in training, one image per calibration step), int8 input
  and output, builtin int8 ops only.
* ``qat_int8`` (QAT runs, ``method`` contains ``quantization``): full-integer
  int8 from the ranges learned in training, no calibration data. Weights keep
  their trained grid: a W4 layer holds at most 15 distinct values per output
  channel, a W2 layer 3.
* ``auto``: ``qat_int8`` for a QAT run, ``float32`` otherwise.

Activations below 8 bits (the paper's W4/A4) do not convert in TF 2.21. Such a
run is exported as W<b>/A8: the same model is built with 8-bit activations
(same weight bits, per layer), the trained weights are copied (the variable
structure is identical), and the 8-bit activation ranges are re-estimated on
``--range_batches`` (32) batches of the run's training images, of the run's
batch size. Each batch is a training-mode forward pass, so every activation
quantizer sees its tensor exactly as in QAT (quantized on the current batch's
range, upstream tensors quantized too), with BatchNorm frozen (``trainable =
False`` makes tf_keras BN use its moving statistics) and Dropout off (rate 0);
the quantizer records ``max|X|`` of the batch. The range kept is the mean of
these batch maxima: the quantity the training EMA tracks, without the EMA's
dependence on where it started. ``--range_batches=0`` keeps the ranges learned
by the W4/A4 training instead. The report gives the test accuracy of the
W4/A4 Keras model, of W4/A8 with the learned ranges, of W4/A8 with re-estimated
ranges (the model converted) and of the LiteRT model.

Low-bit weights: the converter stores W4 (and W2) kernels as packed ``INT4``
tensors. XNNPACK (ai-edge-litert 2.3.0) does not take INT4 convolution
filters, so those layers would run on LiteRT's reference-style builtin
kernels, slower than float. By default (``--weight_storage=int8``) the export
rewrites these tensors as ``INT8`` holding the very same integers (-7..7 for
4 bits, same scales): lossless, fully XNNPACK-delegated, but the file is as
large as a W8 model's. ``--weight_storage=int4`` keeps the converter's packed
int4 tensors (about 0.16x the float file for ResNet20).

``--strip_names`` empties the tensor names (debug strings, as LiteRT's
``strip_strings`` tool does; 4-7 KB for ResNet20). Off by default; compare
files stripped alike (strip the float32 export too).

Verification (any failure raises :class:`ExportError` and leaves no file:
the model is written to a temporary file, verified, then renamed):

* the model runs in ``ai_edge_litert.interpreter.Interpreter`` (default
  delegates, i.e. XNNPACK);
* int8 kinds: int8 model input and output, every CONV_2D / DEPTHWISE_CONV_2D /
  FULLY_CONNECTED has an int8 input and integer (int8, or int4 when kept
  packed) weights, and no operator reads or writes a float32 tensor;
* the trained weight grid survives: each output channel of a W<b> layer holds
  at most 2^b - 1 distinct integers;
* test accuracy of the .tflite on the CIFAR-10 test set (all 10,000 images by
  default, ``--eval_images`` to use the first N) within ``--tolerance_points``
  (0.3) percentage points of the Keras model it was converted from (for
  W4/A4: the W4/A8 re-estimated model; the difference to W4/A4 is reported).

Int8 models take quantized normalized images (``(pixels - mean) / std``, then
the input tensor's scale and zero point); float models take the normalized
float32 images. ``<output>.json`` records the source run, kind, accuracies,
size, operators, grid check, date and machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from tfq_noise import keras, results

KINDS = ("auto", "float32", "ptq_int8", "qat_int8")
WEIGHT_STORAGE = ("int8", "int4")
INT8_KINDS = ("ptq_int8", "qat_int8")
INTEGER_KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
DEFAULT_TOLERANCE_POINTS = 0.3
DEFAULT_PTQ_IMAGES = 500
DEFAULT_RANGE_BATCHES = 32
_EVAL_BATCH = 250
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give (mkstemp makes 0600)


class ExportError(RuntimeError):
    """An export could not be made or failed its verification (no file was left behind)."""


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


# ----------------------------------------------------------------------------- flatbuffer


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def read_model(tflite: bytes):
    """The flatbuffer as the schema's object API (``ModelT``)."""
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(tflite), 0))


def _tensor_type_name(tensor_type: int) -> str:
    return _enum_names(_schema().TensorType).get(tensor_type, str(tensor_type))


def _op_name(model_t, operator) -> str:
    schema = _schema()
    code = model_t.operatorCodes[operator.opcodeIndex]
    builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{(code.customCode or b'').decode(errors='replace')}"
    return _enum_names(schema.BuiltinOperator).get(builtin, str(builtin))


_PACKED_BITS = {"INT4": 4, "INT2": 2}


def unpack_integers(raw: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Signed ``bits``-bit integers packed little-end first into bytes → int8 [count]."""
    raw = np.asarray(raw, np.uint8)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    values = np.stack([(raw >> (bits * k)) & mask for k in range(per_byte)], axis=1).reshape(-1)[:count]
    values = values.astype(np.int16)
    values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    if len(values) != count:
        raise ExportError(f"packed buffer holds {len(values)} values, expected {count}")
    return values.astype(np.int8)


def tensor_values(model_t, tensor) -> np.ndarray | None:
    """A constant tensor's integers or floats (INT4/INT2 unpacked to int8), shaped; None if not constant."""
    buffer = model_t.buffers[tensor.buffer]
    if buffer.data is None or len(buffer.data) == 0:
        return None
    raw = np.asarray(buffer.data, np.uint8)
    shape = [int(d) for d in tensor.shape]
    type_name = _tensor_type_name(tensor.type)
    if type_name in _PACKED_BITS:
        return unpack_integers(raw, _PACKED_BITS[type_name], int(np.prod(shape))).reshape(shape)
    dtype = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64,
             "FLOAT32": np.float32, "FLOAT16": np.float16, "INT16": np.int16}.get(type_name)
    if dtype is None:
        return None
    return np.frombuffer(raw.tobytes(), dtype).reshape(shape)


def _aligned_buffer_class():
    schema = _schema()

    class AlignedBufferT(schema.BufferT):
        """Packs ``data`` 16-byte aligned, as the converter does (the stock Pack aligns to 1)."""

        def Pack(self, builder):  # noqa: N802 (flatbuffers' name)
            data = None
            if self.data is not None:
                payload = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head: builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def write_model(model_t) -> bytes:
    """Serializes a ``ModelT`` back to .tflite bytes (buffers 16-byte aligned)."""
    import flatbuffers

    aligned = _aligned_buffer_class()
    for buffer in model_t.buffers:
        buffer.__class__ = aligned
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def unpack_low_bit_weights(tflite: bytes) -> tuple[bytes, int]:
    """Rewrites packed INT4/INT2 tensors as INT8 with the same integers; returns (bytes, tensors rewritten).

    Scales and zero points are unchanged, so the model computes the same
    function; XNNPACK then delegates these layers.
    """
    schema = _schema()
    model_t = read_model(tflite)
    rewritten = 0
    for subgraph in model_t.subgraphs:
        for tensor in subgraph.tensors:
            if _tensor_type_name(tensor.type) in _PACKED_BITS:
                values = tensor_values(model_t, tensor)
                if values is None:
                    raise ExportError(f"packed tensor {tensor.name!r} has no constant data")
                model_t.buffers[tensor.buffer].data = values.reshape(-1).view(np.uint8)
                tensor.type = schema.TensorType.INT8
                rewritten += 1
    if not rewritten:
        return tflite, 0
    return write_model(model_t), rewritten


def strip_tensor_names(tflite: bytes) -> bytes:
    """Empties every tensor name (debug strings only; as LiteRT's strip_strings tool does)."""
    model_t = read_model(tflite)
    for subgraph in model_t.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = b""
    return write_model(model_t)


# ----------------------------------------------------------------------------- inspection


@dataclasses.dataclass
class TfliteSummary:
    """What the verification looks at in a .tflite."""

    ops: list[dict]  # per operator: name, input/output tensor types, weight tensor name/type
    op_counts: dict[str, int]
    input: dict
    output: dict
    weight_storage: dict[str, int]  # kernel weight tensor type → count

    def to_json(self) -> dict:
        return {"op_counts": self.op_counts, "input": self.input, "output": self.output,
                "kernel_weight_types": self.weight_storage}


def _quant_params(tensor) -> dict:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return {}
    scale = np.asarray(q.scale, np.float64)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.int64)
    if len(scale) == 1:
        return {"scale": float(scale[0]), "zero_point": int(zero[0])}
    return {"per_channel": int(len(scale)), "axis": int(q.quantizedDimension)}


def summarize(tflite: bytes) -> TfliteSummary:
    model_t = read_model(tflite)
    if len(model_t.subgraphs) != 1:
        raise ExportError(f"expected one subgraph, found {len(model_t.subgraphs)}")
    graph = model_t.subgraphs[0]
    tensors = graph.tensors
    ops, counts, storage = [], {}, {}
    for index, operator in enumerate(graph.operators):
        name = _op_name(model_t, operator)
        counts[name] = counts.get(name, 0) + 1
        entry = {
            "index": index,
            "op": name,
            "inputs": [None if i < 0 else _tensor_type_name(tensors[i].type) for i in operator.inputs],
            "outputs": [_tensor_type_name(tensors[i].type) for i in operator.outputs],
        }
        if name in INTEGER_KERNEL_OPS and len(operator.inputs) > 1:
            weight = tensors[operator.inputs[1]]
            entry["weight_name"] = (weight.name or b"").decode(errors="replace")
            entry["weight_type"] = _tensor_type_name(weight.type)
            storage[entry["weight_type"]] = storage.get(entry["weight_type"], 0) + 1
        ops.append(entry)

    def io(indices) -> dict:
        if len(indices) != 1:
            raise ExportError(f"expected one model input and one output, found {len(indices)}")
        tensor = tensors[indices[0]]
        shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        return {"type": _tensor_type_name(tensor.type), "shape": [int(d) for d in shape], **_quant_params(tensor)}

    return TfliteSummary(ops, dict(sorted(counts.items())), io(graph.inputs), io(graph.outputs), storage)


def integer_problems(summary: TfliteSummary, allowed_weight_types: Sequence[str] = ("INT8",)) -> list[str]:
    """Why a model is not a full-integer model (empty list: it is)."""
    problems = []
    for side in ("input", "output"):
        if getattr(summary, side)["type"] != "INT8":
            problems.append(f"model {side} is {getattr(summary, side)['type']}, not INT8")
    for op in summary.ops:
        if op["op"] in INTEGER_KERNEL_OPS:
            if op["inputs"][0] != "INT8":
                problems.append(f"{op['op']} #{op['index']} reads a {op['inputs'][0]} input")
            if op.get("weight_type") not in allowed_weight_types:
                problems.append(f"{op['op']} #{op['index']} has {op.get('weight_type')} weights "
                                f"({op.get('weight_name', '')[:60]})")
        floats = [t for t in op["inputs"] + op["outputs"] if t in ("FLOAT32", "FLOAT16")]
        if floats:
            problems.append(f"{op['op']} #{op['index']} has float tensors (float fallback): {floats}")
    return problems


def _weight_layer(weight_name: str, layer_names: Iterable[str]) -> str | None:
    """The Keras layer a converted kernel comes from: its name holds ``quant_<layer>/``."""
    first = weight_name.split(";")[0]
    for name in sorted(layer_names, key=len, reverse=True):
        if re.search(rf"(^|/)(quant_)?{re.escape(name)}/", first):
            return name
    return None


def weight_grid(tflite: bytes, low_bit_layers: Mapping[str, int], layer_names: Iterable[str] = ()) -> dict:
    """Distinct integers per output channel of every kernel; checks W<b> layers hold <= 2^b - 1.

    ``low_bit_layers``: Keras layer name → weight bits, for layers below 8 bits.
    ``layer_names``: other Keras layer names, to label the remaining kernels.
    Returns ``{"passed", "layers": {name: {...}}, "problems": [...]}``.
    """
    names = set(low_bit_layers) | set(layer_names)
    model_t = read_model(tflite)
    graph = model_t.subgraphs[0]
    layers, problems, found = {}, [], set()
    for index, operator in enumerate(graph.operators):
        name = _op_name(model_t, operator)
        if name not in INTEGER_KERNEL_OPS:
            continue
        weight = graph.tensors[operator.inputs[1]]
        weight_name = (weight.name or b"").decode(errors="replace")
        values = tensor_values(model_t, weight)
        if values is None or values.dtype.kind != "i":
            continue
        axis = 3 if name == "DEPTHWISE_CONV_2D" else 0
        per_channel = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        distinct = [len(np.unique(row)) for row in per_channel]
        layer = _weight_layer(weight_name, names) or weight_name.split(";")[0] or f"{name}#{index}"
        bits = low_bit_layers.get(layer)
        entry = {
            "op": name,
            "storage": _tensor_type_name(weight.type),
            "max_distinct_per_channel": int(max(distinct)),
            "max_abs_integer": int(np.abs(values.astype(np.int32)).max()),
        }
        if bits is not None:
            found.add(layer)
            limit = 2 ** bits - 1
            entry.update(weight_bits=bits, limit=limit, ok=max(distinct) <= limit)
            if max(distinct) > limit:
                problems.append(f"{layer} (W{bits}): a channel holds {max(distinct)} distinct values > {limit}")
        layers[layer] = entry
    missing = sorted(set(low_bit_layers) - found)
    if missing:
        problems.append(f"low-bit layers not found among the converted kernels: {missing}")
    return {"passed": not problems, "checked_layers": len(found), "layers": layers, "problems": problems}


# ----------------------------------------------------------------------------- evaluation


def _interpreter(model_path, num_threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(model_path), num_threads=num_threads or os.cpu_count() or 1)


def quantize_input(images: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """Float normalized images → the input tensor's dtype (quantized with its scale/zero point for ints)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return images.astype(dtype)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise ExportError("integer model input has no quantization scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(values: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def litert_logits(model_path, images: np.ndarray, batch_size: int = _EVAL_BATCH,
                  num_threads: int | None = None) -> np.ndarray:
    """Runs the .tflite on normalized float images (quantizing them for int8 models); float logits."""
    interpreter = _interpreter(model_path, num_threads)
    input_detail = interpreter.get_input_details()[0]
    batch_size = max(1, min(batch_size, len(images)))
    interpreter.resize_tensor_input(input_detail["index"], [batch_size, *images.shape[1:]])
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start: start + batch_size]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        interpreter.set_tensor(input_detail["index"], quantize_input(batch, input_detail))
        interpreter.invoke()
        outputs.append(dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)[:n])
    return np.concatenate(outputs)


def keras_logits(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), np.float32)


def normalize_images(pixels: np.ndarray, normalization: Mapping[str, Sequence[float]]) -> np.ndarray:
    mean = np.asarray(normalization["mean"], np.float32)
    std = np.asarray(normalization["std"], np.float32)
    return ((np.asarray(pixels, np.float32) - mean) / std).astype(np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels).reshape(-1)))


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


def build_a8_model(trained_model, config, final):
    from tfq_noise.train import build_run_model

    config8 = a8_config(config, final)
    model8 = build_run_model(config8, final["input_shape"], final["num_outputs"])
    copy_weights(trained_model, model8)
    return model8, config8


# ----------------------------------------------------------------------------- export + verify


def _machine() -> dict:
    info = results.provenance()
    return {"machine": info["machine"], "packages": info["packages"], "git_commit": info["git_commit"]}


def export_model(
    model,
    kind: str,
    output: str | Path,
    *,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    calibration_images: np.ndarray | None = None,
    low_bit_layers: Mapping[str, int] | None = None,
    weight_storage: str = "int8",
    strip_names: bool = False,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    min_agreement: float | None = None,
    reference_logits: np.ndarray | None = None,
    report: Mapping[str, Any] | None = None,
) -> dict:
    """Converts ``model`` as ``kind``, verifies it, writes ``output`` and ``output.json``; returns the report.

    ``eval_images``: normalized float images, ``eval_labels`` their classes.
    ``reference_logits``: the Keras model's logits on them, if already computed.
    ``report``: extra entries for the JSON (source run, re-estimation...).
    Raises :class:`ExportError` (no file written) when a check fails.
    """
    if kind not in KINDS or kind == "auto":
        raise ExportError(f"unknown export kind {kind!r}; choose one of {[k for k in KINDS if k != 'auto']}")
    if weight_storage not in WEIGHT_STORAGE:
        raise ExportError(f"unknown weight storage {weight_storage!r}; choose one of {list(WEIGHT_STORAGE)}")
    output = Path(output)
    if output.suffix != ".tflite":
        raise ExportError(f"output must end in .tflite, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    eval_images = np.asarray(eval_images, np.float32)
    eval_labels = np.asarray(eval_labels).reshape(-1)
    low_bit_layers = dict(low_bit_layers or {})

    try:
        if kind == "float32":
            tflite = convert_float32(model)
        elif kind == "ptq_int8":
            if calibration_images is None:
                raise ExportError("ptq_int8 needs calibration images")
            tflite = convert_ptq_int8(model, calibration_images)
        else:
            tflite = convert_qat_int8(model)
    except ExportError:
        raise
    except Exception as error:  # the converter raises many types; keep its first lines only
        first = "\n".join(str(error).splitlines()[:8])
        raise ExportError(f"TFLite conversion ({kind}) failed: {type(error).__name__}: {first}") from None

    unpacked = 0
    if kind in INT8_KINDS and weight_storage == "int8":
        tflite, unpacked = unpack_low_bit_weights(tflite)
    # The grid check maps kernels to layers by tensor name: run it before names are stripped
    # (stripping changes nothing else).
    grid = weight_grid(tflite, low_bit_layers, kernel_layer_names(model)) if kind in INT8_KINDS else None
    if strip_names:
        tflite = strip_tensor_names(tflite)

    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    json_tmp = None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tflite)
        os.chmod(tmp, _FILE_MODE)
        summary = summarize(tflite)
        problems = []
        if kind in INT8_KINDS:
            allowed = ("INT8", "INT4", "INT2") if weight_storage == "int4" else ("INT8",)
            problems += integer_problems(summary, allowed)
        elif summary.input["type"] != "FLOAT32" or summary.output["type"] != "FLOAT32":
            problems.append(f"float32 export has {summary.input['type']} input / {summary.output['type']} output")
        if grid is not None and not grid["passed"]:
            problems += grid["problems"]
        if problems:
            raise ExportError(f"{kind} export of {output.name} failed verification:\n  - " + "\n  - ".join(problems))

        try:
            lite = litert_logits(tmp, eval_images)
        except Exception as error:
            raise ExportError(f"the .tflite does not run in LiteRT: {type(error).__name__}: {error}") from None
        reference = keras_logits(model, eval_images) if reference_logits is None else reference_logits
        keras_acc = accuracy(reference, eval_labels)
        lite_acc = accuracy(lite, eval_labels)
        agreement = float(np.mean(np.argmax(lite, -1) == np.argmax(reference, -1)))
        diff_points = 100.0 * (lite_acc - keras_acc)
        if not np.all(np.isfinite(lite)):
            raise ExportError("LiteRT outputs are not finite")
        if abs(diff_points) > tolerance_points:
            raise ExportError(
                f"{kind}: LiteRT accuracy {100 * lite_acc:.2f}% differs from the Keras model's "
                f"{100 * keras_acc:.2f}% by {diff_points:+.2f} points (> {tolerance_points} allowed) "
                f"on {len(eval_labels)} test images"
            )
        if min_agreement is not None and agreement < min_agreement:
            raise ExportError(f"{kind}: LiteRT and Keras agree on the class of {100 * agreement:.1f}% of "
                              f"the images (< {100 * min_agreement:.1f}% required)")

        scale = float(np.max(np.abs(reference))) or 1.0
        report = json.loads(json.dumps(dict(report or {}), default=results._json_default))  # noqa: SLF001
        if "keras_accuracy_original" in report.get("a8_reestimation", {}):
            report["a8_reestimation"]["litert_minus_original_points"] = 100.0 * (
                lite_acc - report["a8_reestimation"]["keras_accuracy_original"])
        data = {
            **report,
            "kind": kind,
            "output": str(output),
            "weight_storage": weight_storage if kind in INT8_KINDS else None,
            "low_bit_tensors_unpacked_to_int8": unpacked,
            "tensor_names_stripped": bool(strip_names),
            "size_bytes": len(tflite),
            "eval_images": int(len(eval_labels)),
            "keras_accuracy": keras_acc,
            "litert_accuracy": lite_acc,
            "litert_minus_keras_points": diff_points,
            "tolerance_points": tolerance_points,
            "argmax_agreement": agreement,
            "max_abs_logit_difference_relative": float(np.max(np.abs(lite - reference)) / scale),
            "ops": summary.op_counts,
            "tflite": summary.to_json(),
            "integer_check": "passed" if kind in INT8_KINDS else "not applicable (float32)",
            "grid_check": grid if grid is not None else "not applicable (float32)",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **_machine(),
        }
        text = json.dumps(data, indent=2, sort_keys=True, default=results._json_default) + "\n"  # noqa: SLF001
        json_fd, json_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.json.", suffix=".tmp")
        json_tmp = Path(json_name)
        with os.fdopen(json_fd, "w") as f:
            f.write(text)
        os.chmod(json_tmp, _FILE_MODE)
        os.replace(tmp, output)
        os.replace(json_tmp, output.with_name(output.name + ".json"))
        return data
    except BaseException:
        tmp.unlink(missing_ok=True)
        if json_tmp is not None:
            json_tmp.unlink(missing_ok=True)
        raise


def _strip_pruning(model):
    if any("PruneLowMagnitude" in type(layer).__name__ for layer in model.layers):
        import tensorflow_model_optimization as tfmot

        return tfmot.sparsity.keras.strip_pruning(model)
    return model


def _float32_config(config):
    """The run's config built in float32: a mixed-precision run's variables are float32 already,
    and a bfloat16 graph is not what the TFLite models should compute."""
    if getattr(config, "precision", "float32") != "float32":
        return dataclasses.replace(config, precision="float32")
    return config


def load_model_float32(run_dir: Path, config, final):
    """The run's model (``build_run_model``) in float32, with its final weights."""
    from tfq_noise.train import build_run_model

    model = build_run_model(_float32_config(config), final["input_shape"], final["num_outputs"])
    model.load_weights(Path(run_dir) / results.WEIGHTS)
    return model


def resolve_kind(kind: str, qat: bool, method: str) -> str:
    if kind not in KINDS:
        raise ExportError(f"unknown export kind {kind!r}; choose one of {list(KINDS)}")
    if kind == "auto":
        return "qat_int8" if qat else "float32"
    if kind == "qat_int8" and not qat:
        raise ExportError(f"qat_int8 needs a quantization-aware run; this run's method is {method!r} "
                          "(export it as float32 or ptq_int8)")
    if kind in ("float32", "ptq_int8") and qat:
        raise ExportError(f"this run is quantization-aware (method {method!r}): its integer model comes from "
                          f"the ranges learned in training; export it with --kind=qat_int8, not {kind}")
    return kind


def default_output(run_dir: Path, kind: str) -> Path:
    return Path("tflite_models") / f"{run_dir.parent.name}__{run_dir.name}__{kind}.tflite"


def export_run(
    run_dir: str | Path,
    output: str | Path | None = None,
    kind: str = "auto",
    *,
    weight_storage: str = "int8",
    strip_names: bool = False,
    eval_images: int = 0,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    min_agreement: float | None = None,
    ptq_images: int = DEFAULT_PTQ_IMAGES,
    range_batches: int = DEFAULT_RANGE_BATCHES,
    paths=None,
    print_fn=print,
) -> dict:
    """Exports a finished run (see the module docstring); returns the JSON report."""
    from tfq_noise.config import RunConfig
    from tfq_noise.datasets import prepare

    run_dir = Path(run_dir)
    if kind not in KINDS:
        raise ExportError(f"unknown export kind {kind!r}; choose one of {list(KINDS)}")
    if weight_storage not in WEIGHT_STORAGE:
        raise ExportError(f"unknown weight storage {weight_storage!r}; choose one of {list(WEIGHT_STORAGE)}")
    if not run_dir.is_dir():
        raise ExportError(f"no run directory at {run_dir}")
    if not (run_dir / results.FINAL).exists():
        raise ExportError(f"{run_dir} is not a finished run (state: {results.run_state(run_dir)}; "
                          f"no {results.FINAL})")
    if not (run_dir / results.WEIGHTS).exists():
        raise ExportError(f"{run_dir / results.WEIGHTS} is missing (weights are not committed): "
                          "re-run the training to get them")
    config = RunConfig.from_dict(results.read_json(run_dir / results.CONFIG))
    qat = is_qat_method(config.method)
    kind = resolve_kind(kind, qat, config.method)
    final = results.read_json(run_dir / results.FINAL)

    data = prepare(config, paths)
    if data.task.multilabel:
        raise ExportError("export verifies single-label accuracy; multi-label runs are not supported")
    normalization = final["normalization"]
    test_images = data.test_images if not eval_images else data.test_images[:eval_images]
    test_labels = data.test_labels if not eval_images else data.test_labels[:eval_images]
    x_test = normalize_images(test_images, normalization)
    rng = np.random.default_rng(config.seed)

    trained_precision = getattr(config, "precision", "float32")
    config = _float32_config(config)
    model = _strip_pruning(load_model_float32(run_dir, config, final))
    source = {"run_dir": str(run_dir), "experiment": final.get("experiment"), "run": final.get("run"),
              "method": config.method, "hparams": config.resolved_hparams, "model": config.model,
              "model_kwargs": dict(config.model_kwargs), "precision_trained": trained_precision,
              "run_test_accuracy": final.get("test_accuracy"),
              "normalization": normalization}
    report: dict[str, Any] = {"source": source}
    output = Path(output) if output else default_output(run_dir, kind)
    calibration = low_bits = reference_logits = None

    if kind == "ptq_int8":
        order = rng.permutation(len(data.train_images))[:ptq_images]
        calibration = normalize_images(data.train_images[order], normalization)
        report["ptq"] = {"calibration_images": int(len(calibration)), "source": "run training images",
                         "per_channel_conv_weights": True}
    elif kind == "qat_int8":
        scheme = config.resolved_hparams.get("quantization_scheme", "paper")
        if scheme == "paper":
            low_bits = low_bit_weight_layers(config, final)
            needs_a8 = activation_bits_below_8(config, final)
        else:
            hp = config.resolved_hparams
            needs_a8 = scheme == "tfmot_n_bit" and int(hp["activation_bits"]) < 8
            low_bits = {}
            if needs_a8:
                raise ExportError(f"activations below 8 bits do not convert, and range re-estimation supports "
                                  f"the 'paper' quantization scheme only (this run: {scheme!r})")
        if needs_a8:
            print_fn(f"activations below 8 bits: rebuilding {final.get('run')} as W/A8 and re-estimating ranges")
            original_acc = accuracy(keras_logits(model, x_test), test_labels)
            model8, config8 = build_a8_model(model, config, final)
            learned_acc = accuracy(keras_logits(model8, x_test), test_labels)
            estimation = {"method": "kept the ranges learned by the low-bit training (--range_batches=0)",
                          "batches": 0}
            if range_batches > 0:
                x_train = normalize_images(data.train_images[rng.permutation(len(data.train_images))], normalization)
                est = reestimate_activation_ranges(model8, x_train, config.batch_size, range_batches)
                estimation = {
                    "method": "mean over training batches of the batch max|X| per quantized tensor, from "
                              "training-mode forward passes with BatchNorm frozen and dropout off",
                    **est,
                }
            reference_logits = keras_logits(model8, x_test)
            keras_acc = accuracy(reference_logits, test_labels)
            report["a8_reestimation"] = {
                "activation_bits_trained": config.resolved_hparams.get("activation_bits"),
                "activation_bits_exported": 8,
                "hparams_exported": config8.resolved_hparams,
                "keras_accuracy_original": original_acc,
                "keras_accuracy_a8_learned_ranges": learned_acc,
                "keras_accuracy_a8_reestimated": keras_acc,
                "reestimation_cost_points": 100.0 * (keras_acc - original_acc),
                **estimation,
            }
            model = model8
    print_fn(f"exporting {run_dir} as {kind} to {output}")
    return export_model(
        model, kind, output, eval_images=x_test, eval_labels=test_labels, calibration_images=calibration,
        low_bit_layers=low_bits, weight_storage=weight_storage, strip_names=strip_names,
        tolerance_points=tolerance_points,
        min_agreement=min_agreement, reference_logits=reference_logits, report=report,
    )


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfq_noise.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run_dir", required=True, help="a finished run: results/<experiment>/<run>")
    p.add_argument("--output", default=None,
                   help="the .tflite to write (default tflite_models/<experiment>__<run>__<kind>.tflite)")
    p.add_argument("--kind", default="auto", help=f"one of {', '.join(KINDS)}")
    p.add_argument("--weight_storage", default="int8", help="low-bit weights as int8 (XNNPACK) or packed int4")
    p.add_argument("--strip_names", action="store_true",
                   help="empty the tensor names (debug strings) to save a few KB; off by default")
    p.add_argument("--eval_images", type=int, default=0, help="first N test images to verify on (0: all)")
    p.add_argument("--tolerance_points", type=float, default=DEFAULT_TOLERANCE_POINTS,
                   help="largest |LiteRT - Keras| test accuracy difference, in percentage points")
    p.add_argument("--min_agreement", type=float, default=None,
                   help="also require this share of equal LiteRT/Keras predicted classes")
    p.add_argument("--ptq_images", type=int, default=DEFAULT_PTQ_IMAGES, help="PTQ calibration images")
    p.add_argument("--range_batches", type=int, default=DEFAULT_RANGE_BATCHES,
                   help="training batches to re-estimate 8-bit activation ranges (0: keep learned ranges)")
    p.add_argument("--cifar10_dir", default=None, help="CIFAR-10 binaries (default $TFQ_NOISE_CIFAR10_DIR)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from tfq_noise.datasets import DataPaths

    args = _parser().parse_args(argv)
    try:
        result = export_run(
            args.run_dir, args.output, args.kind, weight_storage=args.weight_storage, strip_names=args.strip_names,
            eval_images=args.eval_images, tolerance_points=args.tolerance_points,
            min_agreement=args.min_agreement, ptq_images=args.ptq_images, range_batches=args.range_batches,
            paths=DataPaths(cifar10_dir=args.cifar10_dir),
        )
    except (ExportError, FileNotFoundError, ValueError) as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. truncated or corrupted weights (h5py)
        print(f"export failed: cannot read {args.run_dir}'s files ({error}); re-run its training", file=sys.stderr)
        return 1
    summary = {k: result[k] for k in ("output", "kind", "size_bytes", "keras_accuracy", "litert_accuracy",
                                      "litert_minus_keras_points", "argmax_agreement", "ops")}
    if "a8_reestimation" in result:
        a8 = result["a8_reestimation"]
        summary["a8"] = {k: a8[k] for k in ("keras_accuracy_original", "keras_accuracy_a8_learned_ranges",
                                            "keras_accuracy_a8_reestimated", "litert_minus_original_points")}
    if isinstance(result["grid_check"], dict):
        summary["grid_check"] = {k: result["grid_check"][k] for k in ("passed", "checked_layers")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

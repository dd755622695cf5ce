"""Reads, rewrites and summarizes .tflite flatbuffers (LiteRT's schema object API; no TensorFlow calls).

* :func:`check_model_file`: is a file a .tflite model (its ``TFL3`` identifier);
* :func:`read_model` / :func:`write_model`: bytes <-> ``ModelT`` (buffers
  written 16-byte aligned, as the converter writes them);
* :func:`unpack_low_bit_weights`: packed ``INT4`` / ``INT2`` kernels rewritten
  as ``INT8`` holding the same integers (same scales), so that XNNPACK
  (ai-edge-litert 2.3.0) delegates those layers;
* :func:`strip_tensor_names`: empties the tensor names (debug strings), as
  LiteRT's ``strip_strings`` tool does;
* :func:`summarize`, :func:`integer_problems`, :func:`weight_grid`: what the
  export's verification looks at (operators and tensor types, full-integer
  check, distinct integers per output channel of each kernel);
* :func:`architecture`: a fingerprint of the network (input shape and kernel
  shapes), equal for the float32 and int8 exports of one model.

:class:`ExportError` is defined here, at the bottom of the package's imports,
and raised by every ``tfq_noise.deploy`` module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

INTEGER_KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class ExportError(RuntimeError):
    """An export could not be made or failed its verification (no file was left behind)."""


TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of every .tflite model, at bytes 4..8


def check_model_file(path) -> None:
    """Raises ValueError unless ``path`` is a readable TFLite flatbuffer."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER.decode()} identifier): give .tflite "
                         "files written by python -m tfq_noise.deploy.export")


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


def architecture(tflite: bytes) -> str:
    """The network's shape, whatever its precision: input shape (batch left out) and each kernel op's
    weight shape, in order (BatchNorm is folded into the kernels in float32 and int8 files alike)."""
    model_t = read_model(tflite)
    graph = model_t.subgraphs[0]
    first = graph.tensors[graph.inputs[0]]
    shape = [int(d) for d in (first.shapeSignature if first.shapeSignature is not None else first.shape)][1:]
    kernels = [(_op_name(model_t, op), [int(d) for d in graph.tensors[op.inputs[1]].shape])
               for op in graph.operators if _op_name(model_t, op) in INTEGER_KERNEL_OPS]
    digest = hashlib.sha1(repr((shape, kernels)).encode()).hexdigest()[:10]
    return f"{len(kernels)} kernels, input {'x'.join(map(str, shape))}, {digest}"

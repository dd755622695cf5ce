"""Runs a .tflite in LiteRT and its Keras model on the same images, and compares them.

The export's checks (listed in :mod:`tfq_noise.deploy.export`):
:func:`structural_problems` (integer input, output, operators and weights for
the int8 kinds, float32 input and output otherwise, the weight grid), then
:func:`check_against_keras` (the file runs in LiteRT with its default
delegates, i.e. XNNPACK, its outputs are finite, its accuracy is within the
tolerance of the Keras model's, and, optionally, the two agree on the class of
enough images). Each failure is an :class:`ExportError`.

Int8 models take quantized normalized images (``(pixels - mean) / std``, then
the input tensor's scale and zero point); float models take the normalized
float32 images.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from tfq_noise.deploy.flatbuffer import ExportError, TfliteSummary, integer_problems

_EVAL_BATCH = 250


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



def structural_problems(summary: TfliteSummary, *, integer: bool, weight_storage: str = "int8",
                        grid: Mapping[str, Any] | None = None) -> list[str]:
    """Why the file is not what its kind promises (empty list: it is); ``integer`` for the int8 kinds."""
    problems = []
    if integer:
        allowed = ("INT8", "INT4", "INT2") if weight_storage == "int4" else ("INT8",)
        problems += integer_problems(summary, allowed)
    elif summary.input["type"] != "FLOAT32" or summary.output["type"] != "FLOAT32":
        problems.append(f"float32 export has {summary.input['type']} input / {summary.output['type']} output")
    if grid is not None and not grid["passed"]:
        problems += grid["problems"]
    return problems


def check_against_keras(model_path, model, images: np.ndarray, labels: np.ndarray, *, kind: str,
                        tolerance_points: float, min_agreement: float | None = None,
                        reference_logits: np.ndarray | None = None) -> dict:
    """LiteRT vs Keras on ``images`` (normalized floats): accuracies, agreement, logit difference.

    ``reference_logits``: the Keras model's logits, if already computed (``model`` is not run then).
    Raises :class:`ExportError` when the .tflite does not run, gives non-finite outputs, or differs by more
    than ``tolerance_points`` (or agrees on fewer than ``min_agreement`` of the images).
    """
    try:
        lite = litert_logits(model_path, images)
    except Exception as error:
        raise ExportError(f"the .tflite does not run in LiteRT: {type(error).__name__}: {error}") from None
    reference = keras_logits(model, images) if reference_logits is None else reference_logits
    keras_acc = accuracy(reference, labels)
    lite_acc = accuracy(lite, labels)
    agreement = float(np.mean(np.argmax(lite, -1) == np.argmax(reference, -1)))
    diff_points = 100.0 * (lite_acc - keras_acc)
    if not np.all(np.isfinite(lite)):
        raise ExportError("LiteRT outputs are not finite")
    if abs(diff_points) > tolerance_points:
        raise ExportError(
            f"{kind}: LiteRT accuracy {100 * lite_acc:.2f}% differs from the Keras model's "
            f"{100 * keras_acc:.2f}% by {diff_points:+.2f} points (> {tolerance_points} allowed) "
            f"on {len(labels)} test images"
        )
    if min_agreement is not None and agreement < min_agreement:
        raise ExportError(f"{kind}: LiteRT and Keras agree on the class of {100 * agreement:.1f}% of "
                          f"the images (< {100 * min_agreement:.1f}% required)")
    scale = float(np.max(np.abs(reference))) or 1.0
    return {"keras_accuracy": keras_acc, "litert_accuracy": lite_acc, "litert_minus_keras_points": diff_points,
            "argmax_agreement": agreement,
            "max_abs_logit_difference_relative": float(np.max(np.abs(lite - reference)) / scale)}

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
from tfq_noise.deploy.litert_run import invoke_batches

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
    inputs = quantize_input(images, interpreter.get_input_details()[0])
    raw = invoke_batches(interpreter, inputs, batch_size)
    return dequantize_output(raw, interpreter.get_output_details()[0])


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


DEFAULT_TOLERANCE_IMAGES = 10


def accuracy_tolerance(tolerance_points: float, images: int,
                       tolerance_images: int = DEFAULT_TOLERANCE_IMAGES) -> tuple[float, str]:
    """The accuracy difference allowed on ``images`` test images, in points, and the rule in words.

    ``max(tolerance_points, 100 * tolerance_images / images)``: a difference of a few images is chance, not a
    broken conversion. Two implementations that disagree on whether d images are right differ by about
    +-sqrt(d) images by chance (sign test); an export agreeing on 98% of 1,000 images has d <= 20, and then
    a difference above 10 images arises by chance in about 2% of exports (two-sided binomial). On the full
    10,000-image CIFAR-10 test set the points bound binds (0.3 points = 30 images).
    """
    floor = 100.0 * tolerance_images / max(int(images), 1)
    allowed = max(float(tolerance_points), floor)
    rule = (f"max({tolerance_points:g} points, {tolerance_images} images of {images} = {floor:.2f} points) "
            f"= {allowed:.2f} points")
    return allowed, rule


DEFAULT_AGREEMENT_TARGET = 0.99
DEFAULT_AGREEMENT_SLACK = 0.01
FLOOR_STEP_FRACTION = 0.01


def input_step(model_path) -> float | None:
    """The quantization step of the .tflite's input (None for a float input)."""
    detail = _interpreter(model_path, 1).get_input_details()[0]
    if np.dtype(detail["dtype"]).kind == "f":
        return None
    return float(detail["quantization"][0]) or None


def rounding_floor(model, images: np.ndarray, step: float, reference_logits: np.ndarray | None = None,
                   fraction: float = FLOOR_STEP_FRACTION, seed: int = 0) -> float:
    """How often ``model`` keeps its own class when every input value moves by ``fraction`` of ``step``.

    Gaussian noise of standard deviation ``fraction * step`` (by default 1% of one
    int8 input step, far below one pixel level). A float network barely moves;
    a low-bit network is a staircase function, and such a nudge pushes some of
    its activations across a rounding boundary: the agreement this leaves is the
    most any second implementation of the same arithmetic (integer kernels
    instead of float fake quantization) can be expected to reach.
    """
    noise = np.random.default_rng(seed).normal(0.0, fraction * step, images.shape).astype(np.float32)
    reference = keras_logits(model, images) if reference_logits is None else reference_logits
    return float(np.mean(np.argmax(keras_logits(model, images + noise), -1) == np.argmax(reference, -1)))


def agreement_requirement(floor: float | None, target: float = DEFAULT_AGREEMENT_TARGET,
                          slack: float = DEFAULT_AGREEMENT_SLACK) -> float:
    """The least LiteRT/Keras top-1 agreement an export must reach: ``min(target, floor) - slack``."""
    return (target if floor is None else min(target, floor)) - slack


def logit_error_summary(lite: np.ndarray, reference: np.ndarray) -> dict:
    """The LiteRT - Keras logit error distribution, and where the class changes.

    Errors are in units of the reference logits' standard deviation. The top-1
    margin is the reference's largest logit minus its second; agreement is given
    per quartile of that margin (a class flips where the margin is below the error).
    """
    lite = np.asarray(lite, np.float32)
    reference = np.asarray(reference, np.float32)
    unit = float(np.std(reference)) or 1.0
    error = np.abs(lite - reference) / unit
    ordered = np.sort(reference, axis=-1)
    margin = (ordered[:, -1] - ordered[:, -2]) / unit if reference.shape[-1] > 1 else np.zeros(len(reference))
    agree = np.argmax(lite, -1) == np.argmax(reference, -1)
    edges = np.quantile(margin, [0.0, 0.25, 0.5, 0.75, 1.0])
    quartiles = []
    for q in range(4):
        inside = (margin >= edges[q]) & ((margin <= edges[q + 1]) if q == 3 else (margin < edges[q + 1]))
        quartiles.append({"margin_from": float(edges[q]), "margin_to": float(edges[q + 1]),
                          "images": int(inside.sum()),
                          "agreement": float(agree[inside].mean()) if inside.any() else None})
    return {
        "unit": "standard deviation of the Keras logits",
        "unit_value": unit,
        "abs_error_percentiles": {str(p): float(np.percentile(error, p)) for p in (50, 90, 99)},
        "abs_error_max": float(error.max()),
        "median_margin_agreeing": float(np.median(margin[agree])) if agree.any() else None,
        "median_margin_disagreeing": float(np.median(margin[~agree])) if (~agree).any() else None,
        "agreement_by_margin_quartile": quartiles,
    }


def check_against_keras(model_path, model, images: np.ndarray, labels: np.ndarray, *, kind: str,
                        tolerance_points: float, min_agreement: float | None = None,
                        reference_logits: np.ndarray | None = None, agreement_target: float = DEFAULT_AGREEMENT_TARGET,
                        agreement_slack: float = DEFAULT_AGREEMENT_SLACK,
                        tolerance_images: int = DEFAULT_TOLERANCE_IMAGES) -> dict:
    """LiteRT vs Keras on ``images`` (normalized floats): accuracies, agreement, logit errors.

    ``reference_logits``: the Keras model's logits, if already computed. The
    top-1 agreement must reach ``min_agreement`` when given, else
    :func:`agreement_requirement` of the Keras model's :func:`rounding_floor`
    (integer inputs; a float model must reach ``agreement_target - agreement_slack``).
    Raises :class:`ExportError` when the .tflite does not run, gives non-finite outputs, differs in
    accuracy by more than :func:`accuracy_tolerance` allows, or agrees too rarely.
    """
    try:
        lite = litert_logits(model_path, images)
        step = input_step(model_path)
    except Exception as error:
        raise ExportError(f"the .tflite does not run in LiteRT: {type(error).__name__}: {error}") from None
    if not np.all(np.isfinite(lite)):
        raise ExportError("LiteRT outputs are not finite")
    reference = keras_logits(model, images) if reference_logits is None else reference_logits
    keras_acc = accuracy(reference, labels)
    lite_acc = accuracy(lite, labels)
    agreement = float(np.mean(np.argmax(lite, -1) == np.argmax(reference, -1)))
    diff_points = 100.0 * (lite_acc - keras_acc)
    allowed, tolerance_rule = accuracy_tolerance(tolerance_points, len(labels), tolerance_images)
    if abs(diff_points) > allowed + 1e-9:
        raise ExportError(
            f"{kind}: LiteRT accuracy {100 * lite_acc:.2f}% differs from the Keras model's "
            f"{100 * keras_acc:.2f}% by {diff_points:+.2f} points on {len(labels)} test images "
            f"({_images(diff_points, len(labels))}); allowed: {tolerance_rule} (--tolerance_points, --tolerance_images)"
        )
    floor = None if step is None else rounding_floor(model, images, step, reference)
    if min_agreement is not None:
        required, rule = float(min_agreement), "--min_agreement"
    else:
        required = agreement_requirement(floor, agreement_target, agreement_slack)
        rule = (f"min({agreement_target}, rounding floor) - {agreement_slack}" if floor is not None
                else f"{agreement_target} - {agreement_slack} (float input)")
    if agreement < required - 1e-12:
        raise ExportError(f"{kind}: LiteRT and Keras agree on the class of {100 * agreement:.2f}% of "
                          f"the {len(labels)} images (< {100 * required:.2f}% required: {rule}"
                          + (f"; the Keras model agrees with itself on {100 * floor:.2f}% under a nudge of "
                             f"{FLOOR_STEP_FRACTION:g} input step" if floor is not None else "")
                          + "); --min_agreement accepts a model that changes more of its predictions")
    scale = float(np.max(np.abs(reference))) or 1.0
    return {"keras_accuracy": keras_acc, "litert_accuracy": lite_acc, "litert_minus_keras_points": diff_points,
            "tolerance_points_applied": allowed, "tolerance_rule": tolerance_rule,
            "argmax_agreement": agreement, "agreement_required": required, "agreement_rule": rule,
            "rounding_floor": floor, "rounding_floor_step_fraction": FLOOR_STEP_FRACTION if floor is not None else None,
            "input_step": step,
            "logit_error": logit_error_summary(lite, reference), "litert_logits": lite,
            "max_abs_logit_difference_relative": float(np.max(np.abs(lite - reference)) / scale)}


def _images(points: float, n: int) -> str:
    count = int(round(abs(points) * n / 100.0))
    return f"{count} image{'s' if count != 1 else ''}"


def check_against_trained(trained: Mapping[str, Any], lite_logits: np.ndarray, labels: np.ndarray,
                          step: float | None, *, kind: str, tolerance_images: int = DEFAULT_TOLERANCE_IMAGES) -> dict:
    """The LiteRT logits against the model as trained (``trained``: its ``model``, ``images``, ``logits``,
    ``tolerance_points``): accuracy bounded, agreement, its rounding floor and logit errors reported.
    ``step``: the .tflite's input step (None: no floor)."""
    logits = np.asarray(trained["logits"], np.float32)
    tolerance = float(trained["tolerance_points"])
    trained_acc = accuracy(logits, labels)
    lite_acc = accuracy(lite_logits, labels)
    diff = 100.0 * (lite_acc - trained_acc)
    allowed, rule = accuracy_tolerance(tolerance, len(labels), tolerance_images)
    if abs(diff) > allowed + 1e-9:
        raise ExportError(f"{kind}: LiteRT accuracy {100 * lite_acc:.2f}% differs from the model as trained "
                          f"({100 * trained_acc:.2f}%) by {diff:+.2f} points on {len(labels)} test images "
                          f"({_images(diff, len(labels))}); allowed: {rule} (--trained_tolerance_points, "
                          "--tolerance_images)")
    floor = rounding_floor(trained["model"], trained["images"], step, logits) if step else None
    return {"keras_accuracy": trained_acc, "litert_minus_trained_points": diff, "tolerance_points": tolerance,
            "tolerance_points_applied": allowed, "tolerance_rule": rule,
            "argmax_agreement": float(np.mean(np.argmax(lite_logits, -1) == np.argmax(logits, -1))),
            "rounding_floor": floor, "logit_error": logit_error_summary(lite_logits, logits)}

"""An integer TFLite file from a tf_keras model of your own (the runner's runs use :mod:`.export`).

    report = export_int8(qat_model, "model_int8.tflite", calibration_images=x_train, eval_images=x_test,
                         eval_labels=y_test)

* A model made by :func:`tfq_noise.quantize_model` (the paper's scheme) is exported from its learned
  quantization (``qat_int8``). No LiteRT kernel takes activations below 8 bits: a W4/A4 model is rebuilt W4/A8
  from the float model it was made from, its trained weights copied, the 8-bit activation ranges re-estimated
  on ``calibration_images`` (training-mode passes, BatchNorm frozen), and the file is checked against the
  model as trained as well (``trained_tolerance_points``).
* A model of tfmot's own schemes (8-bit activations) converts from its learned ranges as it is.
* Any other tf_keras model is taken as a float model and quantized after training (``ptq_int8``, calibrated
  on ``calibration_images``).

Either way the file is verified (:func:`tfq_noise.deploy.writer.export_model`: integer ops, the W<8 kernels on
their grid, accuracy and agreement with the Keras model) and written with its JSON report, or not written at
all (:class:`~tfq_noise.deploy.flatbuffer.ExportError`). Images are the model's inputs (normalized as in
training); ``eval_labels`` their classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tfq_noise.deploy.convert import copy_weights, reestimate_activation_ranges
from tfq_noise.deploy.flatbuffer import ExportError
from tfq_noise.deploy.verify import accuracy, keras_logits
from tfq_noise.deploy.writer import export_model

DEFAULT_TRAINED_TOLERANCE_POINTS = 1.0


def quantized_source(model):
    """``(float model, QuantizationSpec, layer plans, input bits)`` of a model made by ``quantize_model``
    with the paper's scheme, else None."""
    from tfq_noise.quantization.scheme import SOURCES

    return SOURCES.get(model)


def rebuild_a8(model):
    """The W/A8 twin of a low-bit QAT ``model``: same weight bits, 8-bit activations, trained weights copied
    (activation ranges still the low-bit ones: re-estimate them)."""
    from tfq_noise import keras
    from tfq_noise.quantization.scheme import SCHEMES

    source, spec, plans, _ = quantized_source(model)
    layer_bits = {name: (plan.weight_bits, 8) for name, plan in plans.items() if plan.weight_bits is not None}
    spec8 = dataclasses.replace(spec, activation_bits=8, other_tensor_bits=max(8, spec.other_tensor_bits),
                                layer_bits=layer_bits)
    twin = SCHEMES["paper"](keras.models.clone_model(source), spec8)
    copy_weights(model, twin)
    return twin


def export_int8(model, output: str | Path, *, calibration_images: np.ndarray, eval_images: np.ndarray,
                eval_labels: np.ndarray, range_batches: int = 8, batch_size: int = 128,
                trained_tolerance_points: float = DEFAULT_TRAINED_TOLERANCE_POINTS, **checks) -> dict:
    """Writes ``output`` (and ``output.json``) as a verified full-integer file; returns the report.

    ``checks``: the verification's settings (``tolerance_points``, ``tolerance_images``, ``min_agreement``,
    ``weight_storage``: see :func:`tfq_noise.deploy.writer.export_model`).
    """
    calibration_images = np.asarray(calibration_images, np.float32)
    if len(calibration_images) == 0:
        raise ExportError("calibration_images is empty: give some training images (normalized as in training)")
    source = quantized_source(model)
    if source is None and any(type(layer).__name__.startswith("Quantize") for layer in model.layers):
        # tfmot's own schemes (8-bit activations): their learned ranges convert as they are.
        return export_model(model, "qat_int8", output, eval_images=eval_images, eval_labels=eval_labels, **checks)
    if source is None:
        return export_model(model, "ptq_int8", output, eval_images=eval_images, eval_labels=eval_labels,
                            calibration_images=calibration_images, **checks)
    _, spec, plans, input_bits = source
    low_bits = {name: p.weight_bits for name, p in plans.items() if p.weight_bits is not None and p.weight_bits < 8}
    activation_bits = [input_bits] + [p.output_bits for p in plans.values() if p.output_bits is not None]
    trained = report = None
    deploy = model
    if min(activation_bits) < 8:
        logits = keras_logits(model, eval_images)
        trained = {"model": model, "images": eval_images, "logits": logits,
                   "tolerance_points": trained_tolerance_points}
        deploy = rebuild_a8(model)
        estimation = reestimate_activation_ranges(deploy, calibration_images, batch_size, range_batches)
        report = {"a8_reestimation": {
            "activation_bits_trained": spec.activation_bits, "activation_bits_exported": 8,
            "keras_accuracy_original": accuracy(logits, eval_labels),
            "keras_accuracy_a8_reestimated": accuracy(keras_logits(deploy, eval_images), eval_labels),
            "method": "mean over calibration batches of the batch max|X| per quantized tensor, BatchNorm frozen",
            **estimation}}
    return export_model(deploy, "qat_int8", output, eval_images=eval_images, eval_labels=eval_labels,
                        low_bit_layers=low_bits, trained=trained, report=report, **checks)

"""Exports a finished run as a verified TFLite model (LiteRT), with a JSON report beside it.

    python -m tfq_noise.deploy.export --run_dir=results/<exp>/<run> \\
        [--output=tflite_models/<name>.tflite] [--kind=auto|float32|qat_int8|ptq_int8|aeq_w8a8|aeq_w4a8]

Kinds:

* ``float32`` (float runs): the float model as it is.
* ``ptq_int8`` (float runs): post-training full-integer quantization, the peer
  a user would otherwise pick: int8 weights (per channel for convolutions),
  int8 activations calibrated on ``--ptq_images`` (500) training images of the
  run (normalized as in training, one image per calibration step), int8 input
  and output, builtin int8 ops only.
* ``aeq_w8a8`` / ``aeq_w4a8`` (float runs): the other post-training peer,
  ``ai-edge-quantizer``'s static recipe applied to the float32 .tflite: int8
  activations calibrated on the same ``--ptq_images`` images, int8 or packed
  int4 weights per output channel (:func:`tfq_noise.deploy.convert.convert_aeq`).
  A 4-bit post-training model usually loses accuracy: loosen
  ``--tolerance_points`` / ``--min_agreement`` to keep it for a comparison.
* ``qat_int8`` (QAT runs, ``method`` contains ``quantization``): full-integer
  int8 from the ranges learned in training, no calibration data. Weights keep
  their trained grid: a W4 layer holds at most 15 distinct values per output
  channel, a W2 layer 3.
* ``auto``: ``qat_int8`` for a QAT run, ``float32`` otherwise.

Activations below 8 bits (the paper's W4/A4) do not convert in TF 2.21. Such a
run is exported as W<b>/A8: the same model built with 8-bit activations (same
weight bits, per layer), the trained weights copied, and the 8-bit activation
ranges re-estimated on ``--range_batches`` (32) batches of the run's training
images (how: :mod:`tfq_noise.deploy.convert`). ``--range_batches=0`` keeps the
ranges learned by the W4/A4 training instead. The report gives the test
accuracy of the W4/A4 Keras model, of W4/A8 with the learned ranges, of W4/A8
with re-estimated ranges (the model converted) and of the LiteRT model.

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

Verification (:mod:`tfq_noise.deploy.verify`; any failure raises
:class:`ExportError` and leaves no file: the model is written to a temporary
file, verified, then renamed):

* the model runs in ``ai_edge_litert.interpreter.Interpreter`` (default
  delegates, i.e. XNNPACK);
* int8 kinds: int8 model input and output, every CONV_2D / DEPTHWISE_CONV_2D /
  FULLY_CONNECTED has an int8 input and integer (int8, or int4 when kept
  packed) weights, and no operator reads or writes a float32 tensor;
* the trained weight grid survives: each output channel of a W<b> layer holds
  at most 2^b - 1 distinct integers;
* test accuracy of the .tflite on the test set (all of it by default,
  ``--eval_images`` to use the first N) within ``--tolerance_points`` (0.3)
  percentage points of the Keras model it was converted from;
* top-1 agreement with that Keras model of at least ``min(0.99, floor) - 0.01``
  (``--min_agreement`` replaces the rule), where the *rounding floor* is how
  often the Keras model keeps its own class when its inputs move by 1% of one
  int8 input step (:func:`tfq_noise.deploy.verify.rounding_floor`). A float
  network keeps ~100% and must agree on 98%; a low-bit network is a staircase,
  and no second implementation of its arithmetic can agree with it more often
  than it agrees with itself under such a nudge. The LiteRT - Keras logit error
  distribution and the agreement per quartile of the Keras top-1 margin are
  recorded (``logit_error``);
* when the export rebuilds the model (W4/A4 exported W4/A8), the same against the
  model *as trained*: accuracy within ``--trained_tolerance_points`` (1.0), and the
  agreement, the trained model's own rounding floor and logit errors reported
  (``against_trained_model``). ``--trained_grid`` keeps each low-bit activation's
  trained step in its int8 tensor (range ``r · 127 / (2^(b-1) - 1)``) instead of
  re-estimating 8-bit ranges: the integer model then computes the trained
  rounding (:func:`tfq_noise.deploy.convert.keep_trained_grid`).

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
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)

from tfq_noise import results
from tfq_noise.deploy.convert import (activation_bits_below_8, build_a8_model, convert, is_qat_method,
                                      keep_trained_grid, kernel_layer_names, low_bit_weight_layers,
                                      reestimate_activation_ranges)
from tfq_noise.deploy.flatbuffer import (ExportError, strip_tensor_names, summarize, unpack_low_bit_weights,
                                         weight_grid)
from tfq_noise.deploy.verify import (DEFAULT_AGREEMENT_SLACK, DEFAULT_AGREEMENT_TARGET, accuracy,
                                     check_against_keras, check_against_trained, keras_logits,
                                     normalize_images, structural_problems)

__all__ = ["ExportError", "default_output", "export_model", "export_run", "load_model_float32", "main",
           "resolve_kind"]

KINDS = ("auto", "float32", "ptq_int8", "qat_int8", "aeq_w8a8", "aeq_w4a8")
WEIGHT_STORAGE = ("int8", "int4")
INT8_KINDS = ("ptq_int8", "qat_int8", "aeq_w8a8", "aeq_w4a8")
POST_TRAINING_KINDS = ("ptq_int8", "aeq_w8a8", "aeq_w4a8")
DEFAULT_TOLERANCE_POINTS = 0.3
DEFAULT_TRAINED_TOLERANCE_POINTS = 1.0
DEFAULT_PTQ_IMAGES = 500
DEFAULT_RANGE_BATCHES = 32
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give (mkstemp makes 0600)


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
    trained: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
) -> dict:
    """Converts ``model`` as ``kind``, verifies it, writes ``output`` and ``output.json``; returns the report.

    ``eval_images``: normalized float images, ``eval_labels`` their classes.
    ``reference_logits``: the Keras model's logits on them, if already computed.
    ``trained``: when ``model`` is not the model as trained (a W4/A4 run exported
    W4/A8), ``{"model", "images", "logits", "tolerance_points"}`` of the trained model: the
    LiteRT accuracy must lie within ``tolerance_points`` of its accuracy too, and
    the agreement with it and its own rounding floor are reported.
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

    tflite = convert(model, kind, calibration_images)

    unpacked = 0
    if kind == "aeq_w4a8":
        weight_storage = "int4"  # the point of the W4A8 recipe: packed 4-bit weights
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
        problems = structural_problems(summary, integer=kind in INT8_KINDS, weight_storage=weight_storage,
                                       grid=grid)
        if problems:
            raise ExportError(f"{kind} export of {output.name} failed verification:\n  - " + "\n  - ".join(problems))

        checks = check_against_keras(tmp, model, eval_images, eval_labels, kind=kind,
                                     tolerance_points=tolerance_points, min_agreement=min_agreement,
                                     reference_logits=reference_logits)
        lite_logits = checks.pop("litert_logits")
        as_trained = (check_against_trained(trained, lite_logits, eval_labels, checks["input_step"], kind=kind)
                      if trained else None)
        report = json.loads(json.dumps(dict(report or {}), default=results._json_default))  # noqa: SLF001
        if "keras_accuracy_original" in report.get("a8_reestimation", {}):
            report["a8_reestimation"]["litert_minus_original_points"] = 100.0 * (
                checks["litert_accuracy"] - report["a8_reestimation"]["keras_accuracy_original"])
        data = {
            **report,
            "kind": kind,
            "output": str(output),
            "weight_storage": weight_storage if kind in INT8_KINDS else None,
            "low_bit_tensors_unpacked_to_int8": unpacked,
            "tensor_names_stripped": bool(strip_names),
            "size_bytes": len(tflite),
            "eval_images": int(len(eval_labels)),
            "keras_accuracy": checks["keras_accuracy"],
            "litert_accuracy": checks["litert_accuracy"],
            "litert_minus_keras_points": checks["litert_minus_keras_points"],
            "tolerance_points": tolerance_points,
            "argmax_agreement": checks["argmax_agreement"],
            "agreement_required": checks["agreement_required"],
            "agreement_rule": checks["agreement_rule"],
            "rounding_floor": checks["rounding_floor"],
            "rounding_floor_step_fraction": checks["rounding_floor_step_fraction"],
            "input_step": checks["input_step"],
            "logit_error": checks["logit_error"],
            "against_trained_model": as_trained,
            "max_abs_logit_difference_relative": checks["max_abs_logit_difference_relative"],
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
    if kind in ("float32", *POST_TRAINING_KINDS) and qat:
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
    trained_tolerance_points: float = DEFAULT_TRAINED_TOLERANCE_POINTS,
    min_agreement: float | None = None,
    ptq_images: int = DEFAULT_PTQ_IMAGES,
    range_batches: int = DEFAULT_RANGE_BATCHES,
    trained_grid: bool = False,
    paths=None,
    print_fn=print,
) -> dict:
    """Exports a finished run (see the module docstring); returns the JSON report."""
    from tfq_noise.config import RunConfig
    from tfq_noise.data import prepare

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
    calibration = low_bits = reference_logits = trained = None

    if kind in POST_TRAINING_KINDS:
        order = rng.permutation(len(data.train_images))[:ptq_images]
        calibration = normalize_images(data.train_images[order], normalization)
        report["ptq"] = {"calibration_images": int(len(calibration)), "source": "run training images",
                         "per_channel_conv_weights": True,
                         "tool": "TFLiteConverter" if kind == "ptq_int8" else "ai-edge-quantizer static recipe"}
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
            original_logits = keras_logits(model, x_test)
            original_acc = accuracy(original_logits, test_labels)
            trained = {"model": model, "logits": original_logits, "images": x_test,
                       "tolerance_points": trained_tolerance_points}
            model8, config8 = build_a8_model(model, config, final)
            learned_acc = accuracy(keras_logits(model8, x_test), test_labels)
            estimation = {"method": "kept the ranges learned by the low-bit training (--range_batches=0)",
                          "batches": 0}
            if trained_grid:
                estimation = {"method": "trained grid in int8 (--trained_grid): each low-bit activation's "
                                        "learned range r becomes r * 127 / (2^(b-1) - 1)",
                              "batches": 0, "ranges": keep_trained_grid(model8, config, final)}
            elif range_batches > 0:
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
        min_agreement=min_agreement, reference_logits=reference_logits, trained=trained, report=report,
    )


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfq_noise.deploy.export", description=__doc__.split("\n\n")[0])
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
    p.add_argument("--trained_tolerance_points", type=float, default=DEFAULT_TRAINED_TOLERANCE_POINTS,
                   help="largest |LiteRT - model as trained| test accuracy difference when the export rebuilds "
                        "the model (W4/A4 exported W4/A8), in percentage points")
    p.add_argument("--min_agreement", type=float, default=None,
                   help="the share of equal LiteRT/Keras predicted classes required (default: "
                        f"min({DEFAULT_AGREEMENT_TARGET}, the Keras model's rounding floor) - {DEFAULT_AGREEMENT_SLACK})")
    p.add_argument("--ptq_images", type=int, default=DEFAULT_PTQ_IMAGES, help="PTQ calibration images")
    p.add_argument("--range_batches", type=int, default=DEFAULT_RANGE_BATCHES,
                   help="training batches to re-estimate 8-bit activation ranges (0: keep learned ranges)")
    p.add_argument("--trained_grid", action="store_true",
                   help="low-bit activations keep their trained step in int8 tensors instead of 8-bit ranges "
                        "re-estimated: the integer model computes the trained rounding")
    p.add_argument("--cifar10_dir", default=None, help="CIFAR-10 binaries (default $TFQ_NOISE_CIFAR10_DIR)")
    p.add_argument("--folder_path", default=None,
                   help="--dataset=folder runs: the image folder or CSV (default $TFQ_NOISE_FOLDER_PATH)")
    p.add_argument("--ferplus_dir", default=None, help="FER+ runs: the FER+ folder (default $TFQ_NOISE_FERPLUS_DIR)")
    p.add_argument("--cifar10n_path", default=None, help="CIFAR-10N runs: CIFAR-10_human.pt")
    p.add_argument("--tfds_data_dir", default=None, help="tfds:NAME runs: TFDS's data_dir")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from tfq_noise.data import DataPaths

    args = _parser().parse_args(argv)
    try:
        result = export_run(
            args.run_dir, args.output, args.kind, weight_storage=args.weight_storage, strip_names=args.strip_names,
            eval_images=args.eval_images, tolerance_points=args.tolerance_points,
            trained_tolerance_points=args.trained_tolerance_points, min_agreement=args.min_agreement, ptq_images=args.ptq_images, range_batches=args.range_batches,
            trained_grid=args.trained_grid,
            paths=DataPaths(cifar10_dir=args.cifar10_dir, folder_path=args.folder_path,
                            ferplus_dir=args.ferplus_dir, cifar10n_path=args.cifar10n_path,
                            tfds_data_dir=args.tfds_data_dir),
        )
    except (ExportError, FileNotFoundError, ValueError, RuntimeError) as error:  # RuntimeError: data not found
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. truncated or corrupted weights (h5py)
        print(f"export failed: cannot read {args.run_dir}'s files ({error}); re-run its training", file=sys.stderr)
        return 1
    summary = {k: result[k] for k in ("output", "kind", "size_bytes", "keras_accuracy", "litert_accuracy",
                                      "litert_minus_keras_points", "argmax_agreement", "agreement_required",
                                      "rounding_floor", "ops")}
    if result.get("against_trained_model"):
        summary["against_trained_model"] = {k: result["against_trained_model"][k] for k in (
            "keras_accuracy", "litert_minus_trained_points", "argmax_agreement", "rounding_floor")}
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

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
  ``litert-quantizer``'s static recipe (formerly ``ai-edge-quantizer``) on the float32 .tflite: int8
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
  ``--eval_images`` to use the first N) within ``max(--tolerance_points,
  --tolerance_images / N)`` of the Keras model it was converted from: 0.3
  percentage points, or 10 images where that is more (N < 3,334 images; a
  difference of a few images is chance: :func:`tfq_noise.deploy.verify.accuracy_tolerance`);
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
  model *as trained*: accuracy within ``--trained_tolerance_points`` (1.0; the same
  floor of ``--tolerance_images``), and the
  agreement, the trained model's own rounding floor and logit errors reported
  (``against_trained_model``). ``--trained_grid`` keeps each low-bit activation's
  trained step in its int8 tensor (range ``r · 127 / (2^(b-1) - 1)``) instead of
  re-estimating 8-bit ranges: the integer model then computes the trained
  rounding (:func:`tfq_noise.deploy.convert.keep_trained_grid`).

Int8 models take quantized normalized images (``(pixels - mean) / std``, then
the input tensor's scale and zero point); float models take the normalized
float32 images. ``<output>.json`` records the source run (with its
normalization), the class names, kind, accuracies and the tolerance rule
applied, size and SHA-256 of the file, operators, grid check, date and
machine; ``python -m tfq_noise.deploy.predict`` reads it.

Flags, thresholds and the output path are checked before the run is loaded
(exit 2, nothing written); a failed conversion or verification exits 1 and
leaves no file; Ctrl-C exits 130.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)

from tfq_noise import results
from tfq_noise.deploy import checks
from tfq_noise.deploy.convert import (AEQ_TOOL, activation_bits_below_8, aeq_version, build_a8_model,
                                      is_qat_method, keep_trained_grid, low_bit_weight_layers,
                                      reestimate_activation_ranges)
from tfq_noise.deploy.flatbuffer import ExportError
from tfq_noise.deploy.verify import (DEFAULT_AGREEMENT_SLACK, DEFAULT_AGREEMENT_TARGET, DEFAULT_TOLERANCE_IMAGES,
                                     accuracy, keras_logits, normalize_images)
from tfq_noise.deploy.writer import (DEFAULT_PTQ_IMAGES, DEFAULT_RANGE_BATCHES, DEFAULT_TOLERANCE_POINTS,
                                     DEFAULT_TRAINED_TOLERANCE_POINTS, INT8_KINDS, KINDS, POST_TRAINING_KINDS,
                                     WEIGHT_STORAGE, check_settings, export_model)

__all__ = ["ExportError", "INT8_KINDS", "KINDS", "WEIGHT_STORAGE", "check_settings", "class_names",
           "default_output", "export_model", "export_run", "load_model_float32", "main", "resolve_kind"]


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


def _load_weights(run_dir: Path, config, final):
    """:func:`load_model_float32`, its failures as one :class:`ExportError` naming the weights file."""
    try:
        return load_model_float32(run_dir, config, final)
    except (OSError, ValueError, KeyError) as error:  # h5py: truncated or corrupted file; a model mismatch
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportError(f"cannot read {run_dir / results.WEIGHTS} ({first}): the weights are damaged or belong "
                          "to another model; re-run the training") from None


def resolve_kind(kind: str, qat: bool, method: str) -> str:
    if kind not in KINDS:
        raise checks.InputError(f"unknown export kind {kind!r}; choose one of {list(KINDS)}")
    if kind == "auto":
        return "qat_int8" if qat else "float32"
    if kind == "qat_int8" and not qat:
        raise checks.InputError(f"qat_int8 needs a quantization-aware run; this run's method is {method!r} "
                                "(export it as float32 or ptq_int8)")
    if kind in ("float32", *POST_TRAINING_KINDS) and qat:
        raise checks.InputError(f"this run is quantization-aware (method {method!r}): its integer model comes from "
                                f"the ranges learned in training; export it with --kind=qat_int8, not {kind}")
    return kind


def default_output(run_dir: Path, kind: str) -> Path:
    return Path("tflite_models") / f"{run_dir.parent.name}__{run_dir.name}__{kind}.tflite"


def class_names(config, data) -> tuple[list[str], str]:
    """The run's class names (index order) and where they come from; the indices as text if none are known."""
    num = int(data.task.num_classes)
    given = list(map(str, (data.info or {}).get("classes") or []))
    if len(given) == num:
        return given, "the dataset (its class folders or labels)"
    if config.dataset == "cifar10" and num == 10:
        from tfq_noise.data import cifar10

        return list(cifar10.CLASS_NAMES), "CIFAR-10"
    if config.dataset == "ferplus":
        from tfq_noise.data import ferplus

        if num == len(ferplus.EMOTIONS):
            return list(ferplus.EMOTIONS), "FER+"
    return [str(c) for c in range(num)], "unknown: the class indices"


def _run_files(run_dir: Path):
    """config and final of a finished run with its weights, or :class:`~tfq_noise.deploy.checks.InputError`."""
    from tfq_noise.config import RunConfig

    if not run_dir.is_dir():
        raise checks.InputError(f"no run directory at {run_dir}" if not run_dir.exists() else
                                f"--run_dir={run_dir} is a file: give a run's folder (results/<experiment>/<run>)")
    if not (run_dir / results.FINAL).exists():
        raise checks.InputError(f"{run_dir} is not a finished run (state: {results.run_state(run_dir)}; "
                                f"no {results.FINAL})")
    if not (run_dir / results.WEIGHTS).exists():
        raise checks.InputError(f"{run_dir / results.WEIGHTS} is missing (weights are not committed): "
                                "re-run the training to get them")
    try:
        config = RunConfig.from_dict(results.read_json(run_dir / results.CONFIG))
        final = results.read_json(run_dir / results.FINAL)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise checks.InputError(f"{run_dir}: cannot read its config or final results ({error})") from None
    return config, final


def _qat_plan(config, final) -> tuple[dict, bool]:
    """The low-bit weight layers of a QAT run, and whether its activations need the W/A8 rebuild."""
    scheme = config.resolved_hparams.get("quantization_scheme", "paper")
    if scheme == "paper":
        return low_bit_weight_layers(config, final), activation_bits_below_8(config, final)
    if scheme == "tfmot_n_bit" and int(config.resolved_hparams["activation_bits"]) < 8:
        raise checks.InputError(f"activations below 8 bits do not convert, and range re-estimation supports "
                                f"the 'paper' quantization scheme only (this run: {scheme!r})")
    return {}, False


def export_run(
    run_dir: str | Path,
    output: str | Path | None = None,
    kind: str = "auto",
    *,
    weight_storage: str = "int8",
    strip_names: bool = False,
    eval_images: int = 0,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    tolerance_images: int = DEFAULT_TOLERANCE_IMAGES,
    trained_tolerance_points: float = DEFAULT_TRAINED_TOLERANCE_POINTS,
    min_agreement: float | None = None,
    ptq_images: int = DEFAULT_PTQ_IMAGES,
    range_batches: int = DEFAULT_RANGE_BATCHES,
    trained_grid: bool = False,
    paths=None,
    print_fn=print,
) -> dict:
    """Exports a finished run (see the module docstring); returns the JSON report.

    Settings, the output path and the run's files are checked first (:class:`~tfq_noise.deploy.checks.InputError`,
    nothing written), then the weights are read, then the data is loaded."""
    from tfq_noise.data import prepare

    check_settings(tolerance_points=tolerance_points, tolerance_images=tolerance_images,
                   trained_tolerance_points=trained_tolerance_points, min_agreement=min_agreement,
                   eval_images=eval_images, ptq_images=ptq_images, range_batches=range_batches, kind=kind,
                   weight_storage=weight_storage)
    if output is not None:
        output = checks.check_output(output, suffix=".tflite")
    run_dir = Path(run_dir)
    config, final = _run_files(run_dir)
    qat = is_qat_method(config.method)
    kind = resolve_kind(kind, qat, config.method)
    output = Path(output) if output else checks.check_output(default_output(run_dir, kind), suffix=".tflite")
    low_bits, needs_a8 = _qat_plan(config, final) if kind == "qat_int8" else (None, False)

    trained_precision = getattr(config, "precision", "float32")
    config = _float32_config(config)
    model = _strip_pruning(_load_weights(run_dir, config, final))
    try:
        data = prepare(config, paths)
    except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: no data found (e.g. TFDS offline)
        raise checks.InputError(f"cannot load the data of {run_dir}: {error} (--cifar10_dir, --folder_path, "
                                "--ferplus_dir, --cifar10n_path or --tfds_data_dir say where it is)") from None
    if data.task.multilabel:
        raise checks.InputError("export verifies single-label accuracy; multi-label runs are not supported")
    normalization = final["normalization"]
    test_images = data.test_images if not eval_images else data.test_images[:eval_images]
    test_labels = data.test_labels if not eval_images else data.test_labels[:eval_images]
    x_test = normalize_images(test_images, normalization)
    rng = np.random.default_rng(config.seed)
    names, names_from = class_names(config, data)
    source = {"run_dir": str(run_dir), "experiment": final.get("experiment"), "run": final.get("run"),
              "dataset": config.dataset, "method": config.method, "hparams": config.resolved_hparams,
              "model": config.model, "model_kwargs": dict(config.model_kwargs), "precision_trained": trained_precision,
              "run_test_accuracy": final.get("test_accuracy"), "normalization": normalization}
    report: dict[str, Any] = {"source": source, "class_names": names, "class_names_source": names_from,
                              "input": {"image_shape": list(final["input_shape"]), "pixels": "uint8 0..255",
                                        "normalization": "(pixels - source.normalization.mean) / "
                                                         "source.normalization.std, per channel"}}
    calibration = reference_logits = trained = None

    if kind in POST_TRAINING_KINDS:
        order = rng.permutation(len(data.train_images))[:ptq_images]
        calibration = normalize_images(data.train_images[order], normalization)
        report["ptq"] = {"calibration_images": int(len(calibration)), "source": "run training images",
                         "per_channel_conv_weights": True,
                         "tool": "TFLiteConverter" if kind == "ptq_int8" else AEQ_TOOL}
        if kind != "ptq_int8":
            report["ptq"]["tool_version"] = aeq_version()
    elif kind == "qat_int8":
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
        tolerance_points=tolerance_points, tolerance_images=tolerance_images,
        min_agreement=min_agreement, reference_logits=reference_logits, trained=trained, report=report,
    )


# ----------------------------------------------------------------------------- CLI


def _parser() -> checks.Parser:
    p = checks.Parser(prog="python -m tfq_noise.deploy.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run_dir", required=True, help="a finished run: results/<experiment>/<run>")
    p.add_argument("--output", default=None,
                   help="the .tflite to write (default: tflite_models/<experiment>__<run>__<kind>.tflite)")
    p.add_argument("--kind", default="auto", choices=KINDS,
                   help="auto: qat_int8 for a quantization-aware run, float32 otherwise")
    p.add_argument("--weight_storage", default="int8", choices=WEIGHT_STORAGE,
                   help="low-bit weights as int8 (XNNPACK) or packed int4")
    p.add_argument("--strip_names", action="store_true",
                   help="empty the tensor names (debug strings) to save a few KB (default: kept)")
    p.add_argument("--eval_images", type=checks.non_negative_int, default=0,
                   help="first N test images to verify on (default: 0, the whole test set)")
    p.add_argument("--tolerance_points", type=checks.non_negative_float, default=DEFAULT_TOLERANCE_POINTS,
                   help="largest |LiteRT - Keras| test accuracy difference, in percentage points, unless "
                        "--tolerance_images allows more")
    p.add_argument("--tolerance_images", type=checks.non_negative_int, default=DEFAULT_TOLERANCE_IMAGES,
                   help="... or this many test images, whichever is more: the allowed difference is "
                        "max(tolerance_points, 100 * tolerance_images / N) points on N images")
    p.add_argument("--trained_tolerance_points", type=checks.non_negative_float,
                   default=DEFAULT_TRAINED_TOLERANCE_POINTS,
                   help="largest |LiteRT - model as trained| test accuracy difference when the export rebuilds "
                        "the model (W4/A4 exported W4/A8), in percentage points (same floor of images)")
    p.add_argument("--min_agreement", type=checks.fraction, default=None,
                   help="the share of equal LiteRT/Keras predicted classes required (default: "
                        f"min({DEFAULT_AGREEMENT_TARGET}, the Keras model's rounding floor) - "
                        f"{DEFAULT_AGREEMENT_SLACK})")
    p.add_argument("--ptq_images", type=checks.positive_int, default=DEFAULT_PTQ_IMAGES,
                   help="post-training calibration images")
    p.add_argument("--range_batches", type=checks.non_negative_int, default=DEFAULT_RANGE_BATCHES,
                   help="training batches to re-estimate 8-bit activation ranges (0: keep learned ranges)")
    p.add_argument("--trained_grid", action="store_true",
                   help="low-bit activations keep their trained step in int8 tensors instead of 8-bit ranges "
                        "re-estimated: the integer model computes the trained rounding (default: off)")
    p.add_argument("--cifar10_dir", default=None, help="CIFAR-10 binaries (default: $TFQ_NOISE_CIFAR10_DIR)")
    p.add_argument("--folder_path", default=None,
                   help="--dataset=folder runs: the image folder or CSV (default: $TFQ_NOISE_FOLDER_PATH)")
    p.add_argument("--ferplus_dir", default=None, help="FER+ runs: the FER+ folder (default: $TFQ_NOISE_FERPLUS_DIR)")
    p.add_argument("--cifar10n_path", default=None,
                   help="CIFAR-10N runs: CIFAR-10_human.pt (default: $TFQ_NOISE_CIFAR10N_PATH)")
    p.add_argument("--tfds_data_dir", default=None, help="tfds:NAME runs: TFDS's data_dir (default: TFDS's own)")
    return p


def _summary(result: dict) -> dict:
    summary = {k: result[k] for k in ("output", "kind", "size_bytes", "keras_accuracy", "litert_accuracy",
                                      "litert_minus_keras_points", "tolerance_rule", "argmax_agreement",
                                      "agreement_required", "rounding_floor", "ops")}
    if result.get("against_trained_model"):
        summary["against_trained_model"] = {k: result["against_trained_model"][k] for k in (
            "keras_accuracy", "litert_minus_trained_points", "argmax_agreement", "rounding_floor")}
    if "a8_reestimation" in result:
        a8 = result["a8_reestimation"]
        summary["a8"] = {k: a8[k] for k in ("keras_accuracy_original", "keras_accuracy_a8_learned_ranges",
                                            "keras_accuracy_a8_reestimated", "litert_minus_original_points")}
    if isinstance(result["grid_check"], dict):
        summary["grid_check"] = {k: result["grid_check"][k] for k in ("passed", "checked_layers")}
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 exported; 1 the conversion or verification failed (no file); 2 bad input (nothing written);
    130 interrupted."""
    from tfq_noise.data import DataPaths

    args = _parser().parse_args(argv)
    try:
        result = export_run(
            args.run_dir, args.output, args.kind, weight_storage=args.weight_storage, strip_names=args.strip_names,
            eval_images=args.eval_images, tolerance_points=args.tolerance_points,
            tolerance_images=args.tolerance_images, trained_tolerance_points=args.trained_tolerance_points,
            min_agreement=args.min_agreement, ptq_images=args.ptq_images, range_batches=args.range_batches,
            trained_grid=args.trained_grid,
            paths=DataPaths(cifar10_dir=args.cifar10_dir, folder_path=args.folder_path,
                            ferplus_dir=args.ferplus_dir, cifar10n_path=args.cifar10n_path,
                            tfds_data_dir=args.tfds_data_dir),
        )
    except checks.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return checks.EXIT_BAD_INPUT
    except ExportError as error:
        print(f"error: export failed: {error}".replace("\n", " "), file=sys.stderr)
        return checks.EXIT_FAILED
    except OSError as error:  # writing the file or its report failed midway (no file is left)
        print(f"error: export failed: {error.strerror or error} ({getattr(error, 'filename', None) or args.output}); "
              "nothing was written", file=sys.stderr)
        return checks.EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return checks.EXIT_INTERRUPTED
    print(json.dumps(_summary(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Converts one Keras model to a .tflite, verifies it, and writes it with its JSON report (or nothing).

:func:`export_model` is the step every export goes through (see :mod:`tfq_noise.deploy.export` for the kinds
and the checks): the file is written to a temporary name, verified, then renamed, and its report
(``<output>.json``) is written the same way; a failed check raises :class:`ExportError` and leaves no file.
:func:`check_settings` refuses thresholds and counts no export can use, before any work.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tfq_noise import results
from tfq_noise.deploy import checks
from tfq_noise.deploy.convert import convert, kernel_layer_names
from tfq_noise.deploy.flatbuffer import (ExportError, strip_tensor_names, summarize, unpack_low_bit_weights,
                                         weight_grid)
from tfq_noise.deploy.verify import (DEFAULT_TOLERANCE_IMAGES, check_against_keras, check_against_trained,
                                     structural_problems)

__all__ = ["ExportError", "check_settings", "export_model"]

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


def check_settings(*, tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
                   tolerance_images: int = DEFAULT_TOLERANCE_IMAGES,
                   trained_tolerance_points: float = DEFAULT_TRAINED_TOLERANCE_POINTS,
                   min_agreement: float | None = None, eval_images: int = 0, ptq_images: int = DEFAULT_PTQ_IMAGES,
                   range_batches: int = DEFAULT_RANGE_BATCHES, kind: str = "auto",
                   weight_storage: str = "int8") -> None:
    """Raises :class:`~tfq_noise.deploy.checks.InputError` for a threshold or count no export can use."""
    bad = []
    for name, value in (("tolerance_points", tolerance_points), ("trained_tolerance_points", trained_tolerance_points)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            bad.append(f"--{name}={value} (a number of percentage points >= 0)")
    if min_agreement is not None and (isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float))
                                      or not 0 <= min_agreement <= 1):
        bad.append(f"--min_agreement={min_agreement} (a share in [0, 1], e.g. 0.95)")
    for name, value, low in (("tolerance_images", tolerance_images, 0), ("eval_images", eval_images, 0),
                             ("ptq_images", ptq_images, 1), ("range_batches", range_batches, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            whole = "; 0: the whole test set" if name == "eval_images" else ""
            bad.append(f"--{name}={value} (an integer >= {low}{whole})")
    if kind not in KINDS:
        bad.append(f"--kind={kind} (one of {', '.join(KINDS)})")
    if weight_storage not in WEIGHT_STORAGE:
        bad.append(f"--weight_storage={weight_storage} (one of {', '.join(WEIGHT_STORAGE)})")
    if bad:
        raise checks.InputError("bad export settings: " + "; ".join(bad))


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
    tolerance_images: int = DEFAULT_TOLERANCE_IMAGES,
) -> dict:
    """Converts ``model`` as ``kind``, verifies it, writes ``output`` and ``output.json``; returns the report.

    ``eval_images``: normalized float images, ``eval_labels`` their classes.
    ``reference_logits``: the Keras model's logits on them, if already computed.
    ``trained``: when ``model`` is not the model as trained (a W4/A4 run exported
    W4/A8), ``{"model", "images", "logits", "tolerance_points"}`` of the trained model: the
    LiteRT accuracy must lie within ``tolerance_points`` of its accuracy too, and
    the agreement with it and its own rounding floor are reported.
    ``report``: extra entries for the JSON (source run, class names, re-estimation...).
    Raises :class:`ExportError` (no file written) when a check fails; bad settings or an output that
    cannot be written raise :class:`~tfq_noise.deploy.checks.InputError` before the conversion.
    """
    if kind not in KINDS or kind == "auto":
        raise checks.InputError(f"unknown export kind {kind!r}; choose one of {[k for k in KINDS if k != 'auto']}")
    if weight_storage not in WEIGHT_STORAGE:
        raise checks.InputError(f"unknown weight storage {weight_storage!r}; choose one of {list(WEIGHT_STORAGE)}")
    check_settings(tolerance_points=tolerance_points, tolerance_images=tolerance_images,
                   trained_tolerance_points=(trained or {}).get("tolerance_points", DEFAULT_TRAINED_TOLERANCE_POINTS),
                   min_agreement=min_agreement)
    output = checks.check_output(output, suffix=".tflite")
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

        found = check_against_keras(tmp, model, eval_images, eval_labels, kind=kind,
                                    tolerance_points=tolerance_points, min_agreement=min_agreement,
                                    reference_logits=reference_logits, tolerance_images=tolerance_images)
        lite_logits = found.pop("litert_logits")
        as_trained = (check_against_trained(trained, lite_logits, eval_labels, found["input_step"], kind=kind,
                                            tolerance_images=tolerance_images)
                      if trained else None)
        report = json.loads(json.dumps(dict(report or {}), default=results._json_default))  # noqa: SLF001
        if "keras_accuracy_original" in report.get("a8_reestimation", {}):
            report["a8_reestimation"]["litert_minus_original_points"] = 100.0 * (
                found["litert_accuracy"] - report["a8_reestimation"]["keras_accuracy_original"])
        data = {
            **report,
            "kind": kind,
            "output": str(output),
            "weight_storage": weight_storage if kind in INT8_KINDS else None,
            "low_bit_tensors_unpacked_to_int8": unpacked,
            "tensor_names_stripped": bool(strip_names),
            "size_bytes": len(tflite),
            "sha256": hashlib.sha256(tflite).hexdigest(),
            "eval_images": int(len(eval_labels)),
            "keras_accuracy": found["keras_accuracy"],
            "litert_accuracy": found["litert_accuracy"],
            "litert_minus_keras_points": found["litert_minus_keras_points"],
            "tolerance_points": tolerance_points,
            "tolerance_images": tolerance_images,
            "tolerance_points_applied": found["tolerance_points_applied"],
            "tolerance_rule": found["tolerance_rule"],
            "argmax_agreement": found["argmax_agreement"],
            "agreement_required": found["agreement_required"],
            "agreement_rule": found["agreement_rule"],
            "rounding_floor": found["rounding_floor"],
            "rounding_floor_step_fraction": found["rounding_floor_step_fraction"],
            "input_step": found["input_step"],
            "logit_error": found["logit_error"],
            "against_trained_model": as_trained,
            "max_abs_logit_difference_relative": found["max_abs_logit_difference_relative"],
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

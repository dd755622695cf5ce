"""Classifies image files with an exported .tflite model and writes the predictions as a CSV.

    python -m tfq_noise.deploy.predict MODEL.tflite IMAGES --output=preds.csv [--resize] [--skip_bad]

``IMAGES`` is a folder, read recursively (``.png .jpg .jpeg .bmp .gif``; hidden files and other files are
skipped, and counted), or a CSV with a ``path`` column (relative to the CSV's folder or absolute; other
columns are ignored). Each image is prepared as the model's training prepared it:

* decoded with TensorFlow (a GIF's first frame), its alpha channel dropped, grayscale replicated to RGB or
  RGB converted to grayscale to match the model's channels (``tf.image`` conversions, as the folder dataset);
* its size must be the model's input size, else it is refused with both sizes, unless ``--resize`` is given
  (antialiased bilinear, rounded to 8 bits, as ``--dataset=folder`` resizes);
* normalized with the mean and standard deviation the model was trained with, read from its export report
  (``MODEL.tflite.json``, ``source.normalization``, written by ``python -m tfq_noise.deploy.export``);
* for an integer model, quantized with the model's own input scale and zero point.

The CSV (written atomically) has one row per image: ``path``, ``class_index``, ``class_name``, then
``p_<class name>`` for each class: the softmax of the model's logits. Class names come from the export
report (``class_names``), else from the run it was exported from (CIFAR-10 runs, or a folder run's
``provenance.json``), else ``--class_names``, else the indices.

Errors (one ``error: ...`` line, nothing written, exit 2): a model that is not a .tflite LiteRT can run, or
has no export report with its normalization; a missing, empty or unreadable ``IMAGES``; a file that is not an
image (``--skip_bad`` skips it instead, and says so); an image of the wrong size (without ``--resize``); an
``--output`` that cannot be written. Exit 1: LiteRT failed, or writing the CSV failed midway; 130: Ctrl-C.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from tfq_noise.deploy import checks
from tfq_noise.deploy.verify import dequantize_output, quantize_input

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # those of --dataset=folder
DEFAULT_BATCH = 64


# ----------------------------------------------------------------------------- the model


def model_info(model, class_names: Sequence[str] | None = None) -> dict:
    """What predicting with ``model`` needs: its input/output tensors, normalization and class names."""
    tensors = checks.check_model(model)
    shape = tensors["input"]["shape"]
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise checks.InputError(f"{model} takes inputs of shape {shape}: predict needs images [N, H, W, 1 or 3]")
    classes = int(np.prod(tensors["output"]["shape"][1:]))
    report = checks.export_report(model)
    normalization = ((report or {}).get("source") or {}).get("normalization")
    if not normalization or "mean" not in normalization or "std" not in normalization:
        raise checks.InputError(f"{model} has no export report ({Path(model).name}.json) recording the normalization "
                                "it was trained with: export its run with python -m tfq_noise.deploy.export")
    mean = np.asarray(normalization["mean"], np.float32).reshape(-1)
    std = np.asarray(normalization["std"], np.float32).reshape(-1)
    if len(mean) not in (1, shape[-1]) or len(std) != len(mean) or not np.all(std > 0):
        raise checks.InputError(f"{model}'s export report records mean {mean.tolist()} / std {std.tolist()}, which do "
                                f"not fit its {shape[-1]}-channel input")
    names, source = _class_names(model, report or {}, classes, class_names)
    return {"input": tensors["input"], "output": tensors["output"], "classes": classes, "mean": mean, "std": std,
            "class_names": names, "class_names_source": source}


def _class_names(model, report: dict, classes: int, given: Sequence[str] | None) -> tuple[list[str], str]:
    if given:
        if len(given) != classes:
            raise checks.InputError(f"--class_names names {len(given)} classes; {model} has {classes}")
        return list(given), "--class_names"
    names = report.get("class_names")
    if isinstance(names, list) and len(names) == classes:
        return [str(n) for n in names], "the export report"
    run_dir = Path(str((report.get("source") or {}).get("run_dir") or ""))
    if run_dir.parts:
        provenance = checks.read_json_object(run_dir / "provenance.json") or {}  # if the run is here
        listed = (provenance.get("data") or {}).get("classes")
        if isinstance(listed, list) and len(listed) == classes:
            return [str(n) for n in listed], f"{run_dir}/provenance.json"
        config = checks.read_json_object(run_dir / "config.json") or {}
        if config.get("dataset") == "cifar10" and classes == 10:
            from tfq_noise.data import cifar10

            return list(cifar10.CLASS_NAMES), f"CIFAR-10 (the dataset of {run_dir})"
    return [str(c) for c in range(classes)], "unknown: the class indices (pass --class_names)"


# ----------------------------------------------------------------------------- the images


def list_images(images) -> tuple[list[str], int]:
    """The image files under a folder (recursively, sorted) or listed in a CSV's ``path`` column, and how many
    other files a folder holds (skipped)."""
    root = Path(images)
    if not root.exists():
        raise checks.InputError(f"{root}: no such folder or CSV file")
    if root.is_dir():
        files, skipped = [], 0
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(folder, name))
                else:
                    skipped += 1
        if not files:
            raise checks.InputError(f"{root} holds no images ({' '.join(IMAGE_EXTENSIONS)}; searched recursively"
                                    f"{f', {skipped} other files skipped' if skipped else ''})")
        return files, skipped
    return _list_csv(root), 0


def _list_csv(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in columns:
                raise checks.InputError(f"{path} is neither a folder nor a CSV with a 'path' column (header: "
                                        f"{columns[:5]})")
            reader.fieldnames = columns
            files = []
            for row in reader:
                value = (row.get("path") or "").strip()
                if not value:
                    raise checks.InputError(f"{path} line {reader.line_num}: empty path")
                file = value if os.path.isabs(value) else os.path.join(path.parent, value)
                if not os.path.isfile(file):
                    raise checks.InputError(f"{path} line {reader.line_num}: image file {file} not found")
                files.append(file)
    except (UnicodeDecodeError, csv.Error) as error:
        raise checks.InputError(f"{path} is neither a folder nor a readable CSV ({error})") from None
    except OSError as error:
        raise checks.InputError(f"cannot read {path}: {error.strerror or error}") from None
    if not files:
        raise checks.InputError(f"{path} lists no images")
    return files


class BadImage(checks.InputError):
    """A file that is not a readable image."""


def load_image(path: str, height: int, width: int, channels: int, resize: bool) -> np.ndarray:
    """uint8 [height, width, channels] of ``path``, converted to ``channels`` (see the module docstring)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        image = tf.io.decode_image(raw, channels=0, expand_animations=False, dtype=tf.uint8)
    except (OSError, tf.errors.InvalidArgumentError, ValueError) as error:
        message = (getattr(error, "message", None) or str(error) or type(error).__name__).splitlines()[0]
        raise BadImage(f"{path} is not a readable image ({message}); remove it or pass --skip_bad") from None
    have = int(image.shape[-1])
    if have in (2, 4):  # drop the alpha channel
        image, have = image[..., :have - 1], have - 1
    if channels == 3 and have == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 1 and have == 3:
        image = tf.image.rgb_to_grayscale(image)
    size = (int(image.shape[0]), int(image.shape[1]))
    if size != (height, width):
        if not resize:
            raise checks.InputError(f"{path} is {size[1]}x{size[0]} pixels (width x height) but the model takes "
                                    f"{width}x{height}: pass --resize to resize every image (antialiased bilinear, "
                                    "as training on a folder does)")
        image = tf.image.resize(image, (height, width), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return image.numpy()


def load_images(files: Sequence[str], input_shape: Sequence[int], *, resize: bool, skip_bad: bool,
                print_fn=print) -> tuple[np.ndarray, list[str]]:
    """The images (uint8 [N, H, W, C]) and their paths; unreadable files skipped with ``skip_bad``."""
    _, height, width, channels = (int(d) for d in input_shape)
    kept, pixels, bad = [], [], []
    for file in files:
        try:
            pixels.append(load_image(file, height, width, channels, resize))
            kept.append(file)
        except BadImage:
            if not skip_bad:
                raise
            bad.append(file)
    if bad:
        print_fn(f"skipped {len(bad)} file(s) that are not readable images (--skip_bad): "
                 + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    if not kept:
        raise checks.InputError("no readable image is left to classify")
    return np.stack(pixels), kept


# ----------------------------------------------------------------------------- prediction


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predict_pixels(model, pixels: np.ndarray, info: dict, batch_size: int = DEFAULT_BATCH,
                   num_threads: int | None = None) -> np.ndarray:
    """Class probabilities [N, classes] of uint8 images [N, H, W, C] (normalized, quantized for int models)."""
    from ai_edge_litert.interpreter import Interpreter

    from tfq_noise.deploy.litert_run import invoke_batches

    interpreter = Interpreter(model_path=str(model), num_threads=num_threads or os.cpu_count() or 1)
    normalized = ((np.asarray(pixels, np.float32) - info["mean"]) / info["std"]).astype(np.float32)
    detail = interpreter.get_input_details()[0]
    raw = invoke_batches(interpreter, quantize_input(normalized, detail), batch_size)
    logits = dequantize_output(raw, interpreter.get_output_details()[0]).reshape(len(pixels), -1)
    return softmax(logits)


def _columns(names: Sequence[str]) -> list[str]:
    columns = [f"p_{re.sub(r'[^0-9A-Za-z_.-]+', '_', str(n))}" for n in names]
    reserved = {"path", "class_index", "class_name"}
    if len(set(columns)) != len(columns) or reserved & set(columns):
        columns = [f"p_{i}" for i in range(len(names))]
    return columns


def rows(paths: Sequence[str], probs: np.ndarray, names: Sequence[str]) -> list[dict]:
    columns = _columns(names)
    out = []
    for path, p in zip(paths, probs):
        best = int(np.argmax(p))
        out.append({"path": path, "class_index": best, "class_name": names[best],
                    **{c: round(float(v), 6) for c, v in zip(columns, p)}})
    return out


def predict(model, images, output, *, resize: bool = False, skip_bad: bool = False,
            class_names: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH,
            num_threads: int | None = None, print_fn=print) -> dict:
    """Classifies ``images`` with ``model`` and writes ``output`` (see the module docstring); returns a summary.

    Everything is checked (model, images, sizes, output) before the model runs: a bad input raises
    :class:`~tfq_noise.deploy.checks.InputError` with nothing written."""
    from tfq_noise import results

    output = checks.check_output(output)
    info = model_info(model, class_names)
    files, skipped = list_images(images)
    if skipped:
        print_fn(f"skipped {skipped} file(s) under {images} that are not {'/'.join(IMAGE_EXTENSIONS)} images")
    pixels, kept = load_images(files, info["input"]["shape"], resize=resize, skip_bad=skip_bad, print_fn=print_fn)
    try:
        probs = predict_pixels(model, pixels, info, batch_size, num_threads)
    except Exception as error:  # noqa: BLE001  (LiteRT raises RuntimeError, ValueError...)
        raise checks.ExportError(f"LiteRT failed on {model}: {type(error).__name__}: {error}") from None
    table = rows(kept, probs, info["class_names"])
    results.write_csv(output, table)
    counts = np.bincount(probs.argmax(axis=1), minlength=info["classes"])
    return {"model": str(model), "images": len(kept), "output": str(output), "class_names": info["class_names"],
            "class_names_source": info["class_names_source"],
            "predicted": {info["class_names"][c]: int(n) for c, n in enumerate(counts) if n}}


def _parser() -> checks.Parser:
    p = checks.Parser(prog="python -m tfq_noise.deploy.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a .tflite written by python -m tfq_noise.deploy.export (its .json beside it)")
    p.add_argument("images", help="a folder of images (searched recursively) or a CSV with a 'path' column")
    p.add_argument("--output", required=True, help="the CSV to write (path, class_index, class_name, p_<class>...)")
    p.add_argument("--resize", action="store_true",
                   help="resize images of another size to the model's (default: refuse them)")
    p.add_argument("--skip_bad", action="store_true",
                   help="skip files that are not readable images, and say so (default: refuse them)")
    p.add_argument("--class_names", default=None,
                   help="comma-separated class names, in index order (default: those of the export report)")
    p.add_argument("--batch", type=checks.positive_int, default=DEFAULT_BATCH, help="images per LiteRT invocation")
    p.add_argument("--threads", type=checks.positive_int, default=None,
                   help="LiteRT threads (default: one per CPU)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    try:
        summary = predict(args.model, args.images, args.output, resize=args.resize, skip_bad=args.skip_bad,
                          class_names=names, batch_size=args.batch, num_threads=args.threads,
                          print_fn=lambda text: print(text, file=sys.stderr))
    except checks.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return checks.EXIT_BAD_INPUT
    except checks.ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return checks.EXIT_FAILED
    except OSError as error:
        print(f"error: cannot write {args.output}: {error.strerror or error}; nothing was written", file=sys.stderr)
        return checks.EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return checks.EXIT_INTERRUPTED
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

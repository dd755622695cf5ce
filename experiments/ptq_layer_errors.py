"""Per-operator error of a float run's post-training int8 model (TFLite's quantization debugger).

    python -m experiments.ptq_layer_errors --run_dir=results/<exp>/<run> [--output=errors.csv]

Each operator of the int8 model is run on the dequantized int8 input that the
integer model gives it, and its output is compared with the float operator's
on the same input: the RMSE in units of the output tensor's quantization step.
Ideal rounding noise is 1/sqrt(12) ≈ 0.29 step; an operator far above it is
where a post-training model goes wrong (an outlier range, a bad calibration).
Calibration as in ``python -m tfq_noise.deploy.export --kind=ptq_int8``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)


def layer_errors(run_dir, debug_images: int = 200, calibration_images: int = 500, paths=None) -> list[dict]:
    """One row per quantized operator: ``op``, ``tensor``, ``scale``, ``rmse_steps``, ``max_abs_error``."""
    import tensorflow as tf

    from tfq_noise import results
    from tfq_noise.config import RunConfig
    from tfq_noise.data import prepare
    from tfq_noise.deploy.convert import is_qat_method
    from tfq_noise.deploy.export import load_model_float32
    from tfq_noise.deploy.flatbuffer import ExportError
    from tfq_noise.deploy.verify import normalize_images

    run_dir = Path(run_dir)
    if not (run_dir / results.FINAL).exists() or not (run_dir / results.WEIGHTS).exists():
        raise ExportError(f"{run_dir} needs {results.FINAL} and {results.WEIGHTS} (a finished run, trained here)")
    config = RunConfig.from_dict(results.read_json(run_dir / results.CONFIG))
    if is_qat_method(config.method):
        raise ExportError(f"{run_dir} is quantization-aware: post-training quantization applies to float runs")
    final = results.read_json(run_dir / results.FINAL)
    data = prepare(config, paths)
    norm = final["normalization"]
    order = np.random.default_rng(config.seed).permutation(len(data.train_images))[:calibration_images]
    calibration = normalize_images(data.train_images[order], norm)
    debug = normalize_images(data.test_images[:debug_images], norm)
    converter = tf.lite.TFLiteConverter.from_keras_model(load_model_float32(run_dir, config, final))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([image[None]] for image in debug))
    debugger.run()
    text = io.StringIO()
    debugger.layer_statistics_dump(text)
    rows = []
    for row in csv.DictReader(io.StringIO(text.getvalue())):
        scale = float(row["scale"])
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"], "scale": scale,
                     "rmse_steps": float(row["mean_squared_error"]) ** 0.5 / scale,
                     "max_abs_error": float(row["max_abs_error"])})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from tfq_noise.data import DataPaths
    from tfq_noise.deploy.flatbuffer import ExportError

    p = argparse.ArgumentParser(prog="python -m experiments.ptq_layer_errors", description=__doc__.split("\n\n")[0])
    p.add_argument("--run_dir", required=True)
    p.add_argument("--debug_images", type=int, default=200, help="test images the errors are measured on")
    p.add_argument("--calibration_images", type=int, default=500)
    p.add_argument("--output", default=None, help="also write the rows as CSV here")
    p.add_argument("--cifar10_dir", default=None)
    args = p.parse_args(argv)
    if args.debug_images < 1 or args.calibration_images < 1:
        print("error: --debug_images and --calibration_images must be positive", file=sys.stderr)
        return 2
    try:
        rows = layer_errors(args.run_dir, args.debug_images, args.calibration_images,
                            DataPaths(cifar10_dir=args.cifar10_dir))
    except (ExportError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for row in rows:
        print(f"{row['op']:16s} rmse={row['rmse_steps']:.3f} step  {row['tensor'][-60:]}")
    steps = [row["rmse_steps"] for row in rows]
    print(f"{len(rows)} ops: RMSE {min(steps):.3f}-{max(steps):.3f} step (ideal rounding 0.289)")
    if args.output:
        from tfq_noise import results

        results.write_csv(Path(args.output), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

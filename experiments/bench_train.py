"""Training throughput of ResNet20: float vs. quantization-aware variants.

    python -m experiments.bench_train [--steps 8] [--rounds 4] [--output bench.json]

Synthetic CIFAR-shaped data (random uint8 images, 10 classes) in a tf.data
pipeline, batch 128, SGD with momentum, the same ``train_function`` that
``model.fit`` runs. Every variant is built and warmed up (tracing excluded)
first; then ``--rounds`` rounds each time ``--steps`` steps of every variant,
in an order that rotates from round to round so that no variant always runs
first or last, and the median over the rounds is reported. Variants:

* ``float``: the unquantized model;
* ``w4a4``, ``w8a8``: this project's scheme (``scheme='paper'``; first and
  last layers W8/A8);
* ``tfmot8``: tfmot's stock ``quantize_model`` (8 bits, BN folded in training);
* ``float_fit_numpy``: the float model trained the way a user would without
  this project: plain ``model.fit`` on numpy arrays with default settings
  (the reference of the engine's speed target, ≥ 1.3× this);
* with ``--mixed_bfloat16``: ``float_bf16`` and ``w4a4_bf16`` under the
  ``mixed_bfloat16`` policy. A variant that cannot be built or trained is
  reported as failed with the reason, and the others still run.

The issue's target: a ``w4a4`` step at most 1.25× the ``float`` step.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import statistics
import time
from typing import Callable

from absl import app, flags

import tfq_noise  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf

from tfq_noise import keras
from tfq_noise import results as results_schema
from tfq_noise.models import resnet20
from tfq_noise.quantization import quantize_model

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 8, "Timed training steps per variant and round.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps per variant before the first round (tracing included).")
flags.DEFINE_integer("round_warmup_steps", 1, "Untimed steps per variant at the start of each round.")
flags.DEFINE_integer("rounds", 4, "Rounds; the reported rate is the median over rounds.")
flags.DEFINE_integer("batch_size", 128, "Images per training step.")
flags.DEFINE_integer("threads", 2, "TensorFlow intra-op and inter-op threads.")
flags.DEFINE_list("variants", ["float_fit_numpy", "float", "w4a4", "w8a8", "tfmot8"],
                  "Variants to measure (see the module docstring).")
flags.DEFINE_bool("mixed_bfloat16", False, "Also measure float_bf16 and w4a4_bf16 under the mixed_bfloat16 policy.")
flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA.")
flags.DEFINE_integer("num_images", 1024, "Distinct synthetic images in the pipeline (cached, repeated).")
flags.DEFINE_integer("seed", 0, "Seed of the data and the weights.")
flags.DEFINE_string("output", None, "Write the results as JSON to this path.")

BF16_VARIANTS = ("float_bf16", "w4a4_bf16")


def _builders() -> dict[str, Callable[[], keras.Model]]:
    def paper(bits: int):
        return lambda: quantize_model(resnet20(), bits, bits, 8, scheme="paper")

    return {
        "float": resnet20,
        "float_fit_numpy": resnet20,
        "w4a4": paper(4),
        "w8a8": paper(8),
        "w2a2": paper(2),
        "tfmot8": lambda: quantize_model(resnet20(), scheme="tfmot_default_8bit"),
        "tfmot_n_bit4": lambda: quantize_model(resnet20(), 4, 4, scheme="tfmot_n_bit"),
        "float_bf16": resnet20,
        "w4a4_bf16": paper(4),
    }


def make_dataset(batch_size: int, num_images: int, seed: int) -> tf.data.Dataset:
    """Random uint8 32×32×3 images and 10 labels, scaled to [0, 1) on the fly, repeated."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=num_images).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(num_images, seed=seed)
    dataset = dataset.repeat().batch(batch_size, drop_remainder=True)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class Variant:
    """A compiled model, its train function and an iterator over the data."""

    def __init__(self, name: str, build: Callable[[], keras.Model], dataset: tf.data.Dataset, jit_compile: bool):
        self.name = name
        self.rates: list[float] = []
        self.cpu_ms: list[float] = []  # process CPU time per step, all threads
        self.error: str | None = None
        policy = keras.mixed_precision.global_policy()
        if name in BF16_VARIANTS:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            keras.utils.set_random_seed(FLAGS.seed)
            self.model = build()
            self.model.compile(
                optimizer=keras.optimizers.Adam(1e-3),  # the training loop's optimizer
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit_compile,
            )
            self.train_function = self.model.make_train_function()
            self.iterator = iter(dataset)
            if name == "float_fit_numpy":
                rng = np.random.default_rng(FLAGS.seed)
                self.numpy_x = rng.integers(0, 256, (FLAGS.num_images, 32, 32, 3)).astype(np.float32) / 255.0
                self.numpy_y = rng.integers(0, 10, FLAGS.num_images).astype(np.int32)
        finally:
            keras.mixed_precision.set_global_policy(policy)

    def tracing_count(self) -> int | None:
        get = getattr(self.train_function, "experimental_get_tracing_count", None)
        return get() if get else None

    def run(self, steps: int) -> tuple[float, float]:
        """Runs ``steps`` training steps; returns their wall and process CPU seconds."""
        start, start_cpu = time.perf_counter(), time.process_time()
        if self.name == "float_fit_numpy":
            n = steps * FLAGS.batch_size
            repeats = int(np.ceil(n / len(self.numpy_x)))
            x, y = np.concatenate([self.numpy_x] * repeats)[:n], np.concatenate([self.numpy_y] * repeats)[:n]
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = self.model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0).history["loss"][-1]
        else:
            for _ in range(steps):
                logs = self.train_function(self.iterator)
            loss = float(logs["loss"])  # waits for the last step
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if not np.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {loss}")
        return elapsed, cpu


def describe_error(error: Exception) -> str:
    """The innermost ``SomethingError: message`` line of a Keras error, else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    inner = [line for line in lines if re.match(r"^\w+(Error|Exception): ", line)]
    text = inner[-1] if inner else (lines[0] if lines else "")
    prefix = f"{type(error).__name__}: "
    return (text if text.startswith(prefix) else prefix + text)[:400]


def main(argv) -> None:
    del argv
    # Must come before TensorFlow runs its first op.
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    names = list(FLAGS.variants) + (list(BF16_VARIANTS) if FLAGS.mixed_bfloat16 else [])
    builders = _builders()
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise app.UsageError(f"unknown variants {unknown}; choose from {sorted(builders)}")

    dataset = make_dataset(FLAGS.batch_size, FLAGS.num_images, FLAGS.seed)
    variants: list[Variant] = []
    failed: dict[str, str] = {}
    for name in names:
        start = time.perf_counter()
        try:
            variant = Variant(name, builders[name], dataset, FLAGS.jit_compile)
            variant.run(FLAGS.warmup_steps)
        except Exception as error:  # pylint: disable=broad-except  (report it, measure the rest)
            failed[name] = describe_error(error)
            print(f"{name}: FAILED ({failed[name]})", flush=True)
            continue
        variants.append(variant)
        print(f"{name}: built and warmed up in {time.perf_counter() - start:.1f} s", flush=True)

    for round_index in range(FLAGS.rounds):
        shift = round_index % max(len(variants), 1)
        for variant in variants[shift:] + variants[:shift]:
            if FLAGS.round_warmup_steps:
                variant.run(FLAGS.round_warmup_steps)
            seconds, cpu_seconds = variant.run(FLAGS.steps)
            variant.rates.append(FLAGS.steps * FLAGS.batch_size / seconds)
            variant.cpu_ms.append(1000 * cpu_seconds / FLAGS.steps)
        print(
            f"round {round_index + 1}/{FLAGS.rounds}: "
            + ", ".join(f"{v.name} {v.rates[-1]:.0f} img/s" for v in variants),
            flush=True,
        )

    medians = {v.name: statistics.median(v.rates) for v in variants if v.rates}
    cpu_medians = {v.name: statistics.median(v.cpu_ms) for v in variants if v.cpu_ms}
    float_rate, float_cpu = medians.get("float"), cpu_medians.get("float")
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": results_schema.cpu_model(), "platform": platform.platform(), "python": platform.python_version()},
        "tensorflow": tf.__version__,
        "flags": {
            name: FLAGS[name].value
            for name in ("steps", "warmup_steps", "round_warmup_steps", "rounds", "batch_size", "threads",
                         "variants", "mixed_bfloat16", "jit_compile", "num_images", "seed")
        },
        "variants": {},
        "failed": failed,
    }
    print()
    print(f"ResNet20, batch {FLAGS.batch_size}, {FLAGS.threads} threads, jit_compile={FLAGS.jit_compile}, "
          f"median of {FLAGS.rounds} rounds × {FLAGS.steps} steps")
    print("wall: images/s and step time; CPU: process CPU time per step (all threads), less "
          "sensitive to other jobs on a shared machine")
    print(f"{'variant':<14}{'images/s':>10}{'ms/step':>10}{'step/float':>12}{'CPU ms/step':>13}"
          f"{'CPU/float':>11}{'min..max img/s':>17}")
    for variant in variants:
        rate = medians[variant.name]
        step_ratio = float_rate / rate if float_rate else None
        results["variants"][variant.name] = {
            "images_per_second": rate,
            "ms_per_step": 1000 * FLAGS.batch_size / rate,
            "step_time_vs_float": step_ratio,
            "rates_per_round": variant.rates,
            "cpu_ms_per_step": cpu_medians[variant.name],
            "cpu_vs_float": cpu_medians[variant.name] / float_cpu if float_cpu else None,
            "cpu_ms_per_round": variant.cpu_ms,
            "traces": variant.tracing_count(),  # 1: no retracing inside the timed steps
        }
        ratio = f"{step_ratio:.2f}×" if step_ratio else "n/a"
        cpu = cpu_medians[variant.name]
        cpu_ratio = f"{cpu / float_cpu:.2f}×" if float_cpu else "n/a"
        spread = f"{min(variant.rates):.0f}..{max(variant.rates):.0f}"
        print(f"{variant.name:<14}{rate:>10.0f}{1000 * FLAGS.batch_size / rate:>10.0f}{ratio:>12}"
              f"{cpu:>13.0f}{cpu_ratio:>11}{spread:>17}")
    for name, reason in failed.items():
        print(f"{name:<14}FAILED: {reason}")
    spread = max((max(v.rates) / min(v.rates) for v in variants if v.rates), default=1.0)
    results["max_round_spread"] = spread
    if spread > 1.3:
        print(f"\nwarning: a variant's rate varies {spread:.1f}× between rounds: other jobs share the "
              "CPU, so wall-clock ratios are unreliable; compare the CPU-time column")
    if float_rate and "w4a4" in medians:
        ratio = float_rate / medians["w4a4"]
        cpu_ratio = cpu_medians["w4a4"] / float_cpu
        verdict = "meets" if ratio <= 1.25 else "misses"
        print(f"\nw4a4 step = {ratio:.2f}× float step (wall), {cpu_ratio:.2f}× (CPU time): "
              f"{verdict} the ≤ 1.25× target (wall)")
        results["w4a4_target_met"] = ratio <= 1.25
    if "float_fit_numpy" in medians:
        reference = medians["float_fit_numpy"]
        for name in ("float", "float_bf16"):
            if name in medians:
                speedup = medians[name] / reference
                print(f"{name} step on the project's pipeline = {speedup:.2f}× plain model.fit on numpy "
                      f"(target ≥ 1.3×: {'met' if speedup >= 1.3 else 'missed'})")
                results[f"{name}_vs_plain_fit"] = speedup
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)

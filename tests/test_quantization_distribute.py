"""W4/A4 under tf.distribute: MirroredStrategy on 2 logical CPUs trains exactly as one device does.

The activation quantizer's range is the *global* batch's max|X| (the maximum over replicas), so each
replica quantizes its slice on the same grid as one device would, and the range's moving average is one
well-defined value. Runs in a child process: logical devices must be set before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json
import tfq_noise
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfq_noise import keras
from tfq_noise.quantization import quantize_model


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return quantize_model(keras.Model(inputs, keras.layers.Dense(3)(x)), weight_bits=4, activation_bits=4)


rng = np.random.default_rng(0)
images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
images[12:] *= 5.0  # the largest values sit in the second replica's half of the batch
labels = rng.integers(0, 3, 16)


def train(strategy):
    with strategy.scope():
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    ranges = [float(v.numpy()) for v in model.non_trainable_weights if "range_ema" in v.name]
    return {"ranges": ranges, "weights": [v.numpy().ravel().tolist() for v in model.trainable_weights],
            "replicas": strategy.num_replicas_in_sync}


print(json.dumps({"one": train(tf.distribute.OneDeviceStrategy("/cpu:0")),
                  "mirrored": train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
                  "input_max": float(np.abs(images).max()), "first_half_max": float(np.abs(images[:8]).max())}))
'''


def test_w4a4_under_mirrored_strategy_matches_one_device():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    one, mirrored = out["one"], out["mirrored"]
    assert mirrored["replicas"] == 2 and one["replicas"] == 1
    assert len(one["ranges"]) == len(mirrored["ranges"]) >= 3
    # The input's range is the global batch's, not the first replica's half.
    assert out["input_max"] > out["first_half_max"]
    np.testing.assert_allclose(mirrored["ranges"], one["ranges"], rtol=1e-5)
    for a, b in zip(one["weights"], mirrored["weights"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)

"""Tests of ``tfq_noise.quantization``: the paper's quantizer (§2.2) on tfmot.

Every check is against an independent reference (numpy rounding, hand-computed
EMA values, the integer weights of a converted .tflite file), so that a wrong
grid, a wrong range, a gradient that is not the identity or a misplaced
quantizer fails a test. Models are tiny (8×8 images, ResNet20 with one block
per stage and 4 base filters) to keep the file fast on two CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf

from tfq_noise import keras
from tfq_noise.models import resnet20
from tfq_noise.quantization import (
    ActivationQuantizer,
    QuantizationSpec,
    WeightQuantizer,
    fake_quant_per_channel,
    fake_quant_per_tensor,
    plan_model,
    quantize_model,
    quantize_scope,
)

ALL_BITS = list(range(2, 9))
INVALID_BITS = [1, 9, 0, 16, 4.5, True]
IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 4


# --------------------------------------------------------------------------------------
# References and helpers
# --------------------------------------------------------------------------------------


def np_fake_quant(x, scale, bits):
    """numpy reference: round(x·q/s) clipped to ±q, times s/q; s = 0 gives 0."""
    q = 2 ** (bits - 1) - 1
    x = np.asarray(x, np.float64)
    scale = np.asarray(scale, np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    y = np.clip(np.round(x * q / safe), -q, q) * safe / q
    return np.where(scale > 0, y, 0.0)


def np_channel_scale(w):
    return np.abs(w).max(axis=tuple(range(w.ndim - 1)))


def away_from_ties(x, scale, bits, margin=1e-3):
    """Moves the few values within ``margin`` of a rounding tie to the grid point below.

    TF rounds half up and numpy half to even, and float32 error can flip a
    near-tie either way: such values say nothing about the implementation.
    """
    q = 2 ** (bits - 1) - 1
    t = np.asarray(x, np.float64) * q / scale
    near = np.abs(t - np.floor(t) - 0.5) < margin
    t = np.where(near, np.floor(t), t)
    return (t * scale / q).astype(np.float32), near.mean()


def assert_on_grid(values, step, q, atol=1e-4):
    """Every value is k·step with an integer k in [-q, q]."""
    k = np.asarray(values, np.float64) / step
    np.testing.assert_allclose(k, np.round(k), atol=atol)
    assert np.abs(np.round(k)).max() <= q


def distinct_per_channel(w):
    w = np.asarray(w).reshape(-1, w.shape[-1])
    return [len(np.unique(w[:, c])) for c in range(w.shape[-1])]


def kernel_wrappers(model):
    """(wrapper, kernel variable, WeightQuantizer) for each quantized kernel."""
    found = []
    for layer in model.layers:
        for weight, quantizer, _ in getattr(layer, "_weight_vars", []):
            if isinstance(quantizer, WeightQuantizer):
                found.append((layer, weight, quantizer))
    return found


def input_quantize_layer(model):
    """The QuantizeLayer after the model input (its name gets a suffix in later models)."""
    (layer,) = [l for l in model.layers if type(l).__name__ == "QuantizeLayer"]
    return layer


def effective_kernel(quantizer, kernel):
    return quantizer(kernel, training=False, weights={}).numpy()


def small_resnet(**kwargs):
    return resnet20(
        num_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE, blocks_per_stage=1, base_filters=4, **kwargs
    )


def quadrant_task(n=64, seed=0):
    """A learnable task: the label is the image quadrant that is bright."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, NUM_CLASSES, n)
    x = rng.uniform(0.0, 0.2, (n,) + IMAGE_SHAPE).astype(np.float32)
    half = IMAGE_SHAPE[0] // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * half:(r + 1) * half, c * half:(c + 1) * half, :] += 1.0
    return x, y.astype(np.int32)


def activation_holder():
    """A layer to own an ActivationQuantizer's variables, as a QuantizeWrapper would."""
    return keras.layers.Layer(name="holder")


# --------------------------------------------------------------------------------------
# ops: fake_quant_per_channel / fake_quant_per_tensor
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("shape", [(3, 3, 5, 7), (20, 6)], ids=["conv4d", "dense2d"])
def test_per_channel_matches_numpy(bits, shape):
    rng = np.random.RandomState(bits)
    w = (rng.randn(*shape) * rng.uniform(0.1, 3.0, shape[-1])).astype(np.float32)
    scale = np_channel_scale(w)
    w, tie_fraction = away_from_ties(w, scale, bits)
    assert tie_fraction < 0.01
    got = fake_quant_per_channel(w, bits).numpy()
    np.testing.assert_allclose(got, np_fake_quant(w, scale, bits), rtol=0, atol=1e-6 * scale.max())
    # Per channel, not per tensor: each channel has its own step.
    assert_on_grid(got / scale, 1.0 / (2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_per_tensor_matches_numpy_with_batch_max(bits):
    rng = np.random.RandomState(10 + bits)
    x = (rng.randn(4, 5, 6) * 2.5).astype(np.float32)
    scale = np.abs(x).max()
    x, _ = away_from_ties(x, scale, bits)
    got = fake_quant_per_tensor(x, bits).numpy()
    np.testing.assert_allclose(got, np_fake_quant(x, scale, bits), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_per_tensor_matches_numpy_with_given_scale(bits):
    rng = np.random.RandomState(20 + bits)
    x = (rng.randn(64, 3) * 2.0).astype(np.float32)
    scale = 1.5  # below max|x|: the tails are clipped to ±scale
    assert np.abs(x).max() > 2 * scale
    x, _ = away_from_ties(x, scale, bits)
    got = fake_quant_per_tensor(x, bits, scale).numpy()
    np.testing.assert_allclose(got, np_fake_quant(x, scale, bits), rtol=0, atol=1e-6 * scale)
    assert np.abs(got).max() == pytest.approx(scale, rel=1e-6)
    # A tensor scale works too.
    got_tensor_scale = fake_quant_per_tensor(x, bits, tf.constant(scale)).numpy()
    np.testing.assert_array_equal(got_tensor_scale, got)


def test_zero_channels_stay_exactly_zero():
    w = np.random.RandomState(0).randn(3, 3, 2, 5).astype(np.float32)
    w[..., 1] = 0.0
    w[..., 4] = 0.0
    for bits in ALL_BITS:
        got = fake_quant_per_channel(w, bits).numpy()
        assert not np.isnan(got).any()
        assert np.all(got[..., 1] == 0.0) and np.all(got[..., 4] == 0.0)
        assert np.all(np.abs(got[..., [0, 2, 3]]).max(axis=(0, 1, 2)) > 0)
        zeros = fake_quant_per_tensor(np.zeros((4, 3), np.float32), bits).numpy()
        assert np.all(zeros == 0.0)
        zero_dense = fake_quant_per_channel(np.zeros((6, 3), np.float32), bits).numpy()
        assert np.all(zero_dense == 0.0)


def test_zero_channel_gradient_is_finite():
    w = tf.Variable(np.zeros((3, 3, 2, 4), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_per_channel(w, 4) * 2.0)
    grad = tape.gradient(loss, w).numpy()
    np.testing.assert_array_equal(grad, np.full(w.shape, 2.0, np.float32))


@pytest.mark.parametrize("bits", ALL_BITS)
def test_extremes_map_to_extremes(bits):
    w = np.random.RandomState(bits).uniform(-1, 1, (4, 3)).astype(np.float32)
    w[0] = [2.0, -0.5, 3.0]  # +max of channels 0 and 2
    w[1] = [-1.0, -4.0, -3.0]  # -max of channels 1 and 2
    got = fake_quant_per_channel(w, bits).numpy()
    np.testing.assert_allclose(got[0, [0, 2]], [2.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(got[1, [1, 2]], [-4.0, -3.0], rtol=1e-6)
    x = np.array([-2.5, 0.3, 2.5, 1.0], np.float32)
    got = fake_quant_per_tensor(x, bits).numpy()
    np.testing.assert_allclose(got[[0, 2]], [-2.5, 2.5], rtol=1e-6)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_distinct_values_per_channel(bits):
    levels = 2 ** bits - 1
    # Dense uniform data fills every level of the narrow grid, and no more.
    w = np.random.RandomState(bits).uniform(-1, 1, (4096, 3)).astype(np.float32)
    w[:, 1] *= 0.01
    counts = distinct_per_channel(fake_quant_per_channel(w, bits).numpy())
    assert counts == [levels] * 3
    assert len(np.unique(fake_quant_per_tensor(w[:, 0] * 3, bits).numpy())) == levels


@pytest.mark.parametrize("bits", INVALID_BITS)
def test_invalid_bits_raise(bits):
    x = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError):
        fake_quant_per_channel(x, bits)
    with pytest.raises(ValueError):
        fake_quant_per_tensor(x, bits)
    with pytest.raises(ValueError):
        fake_quant_per_tensor(x, bits, 1.0)
    with pytest.raises(ValueError):
        WeightQuantizer(bits)
    with pytest.raises(ValueError):
        ActivationQuantizer(bits)


# --------------------------------------------------------------------------------------
# Straight-through estimator
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("graph_mode", [False, True], ids=["eager", "tf_function"])
def test_straight_through_gradient_is_identity(graph_mode):
    rng = np.random.RandomState(3)
    x = tf.Variable((rng.randn(3, 3, 4, 6) * 2).astype(np.float32))
    r = tf.constant(rng.randn(3, 3, 4, 6).astype(np.float32))
    functions = {
        "per_channel": lambda v: fake_quant_per_channel(v, 3),
        "per_tensor": lambda v: fake_quant_per_tensor(v, 3),
        # Half the values lie outside ±1: clipped in the forward pass, yet the
        # gradient stays the identity there too.
        "per_tensor_clipped": lambda v: fake_quant_per_tensor(v, 3, 1.0),
        "weight_quantizer": lambda v: WeightQuantizer(2)(v, training=True, weights={}),
    }
    for name, fn in functions.items():

        def grad(fn=fn):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(fn(x) * r)
            return tape.gradient(loss, x)

        if graph_mode:
            grad = tf.function(grad)
        g = grad().numpy()
        np.testing.assert_array_equal(g, r.numpy(), err_msg=name)


# --------------------------------------------------------------------------------------
# ActivationQuantizer
# --------------------------------------------------------------------------------------


def test_activation_quantizer_batch_range_in_training_ema_at_inference():
    momentum, bits = 0.9, 4
    q = 2 ** (bits - 1) - 1
    quantizer = ActivationQuantizer(bits, ema_momentum=momentum)
    weights = quantizer.build(tf.TensorShape([None, 5]), "act", activation_holder())
    ema = weights["range_ema"]
    assert not ema.trainable

    rng = np.random.RandomState(0)
    x1 = rng.uniform(-1.0, 1.0, (16, 5)).astype(np.float32)
    m1 = float(np.abs(x1).max())
    y1 = quantizer(tf.constant(x1), training=True, weights=weights).numpy()
    assert float(ema.numpy()) == pytest.approx(m1, rel=1e-7)  # first call initializes
    np.testing.assert_allclose(y1, np_fake_quant(away_from_ties(x1, m1, bits)[0], m1, bits), atol=1e-6 * m1)
    assert_on_grid(y1, m1 / q, q)

    # A second batch with a 4× larger range: training uses *its* range (no
    # clipping at the moving average), and the average moves by (1 - m).
    x2 = x1 * 4.0
    m2 = 4.0 * m1
    y2 = quantizer(tf.constant(x2), training=True, weights=weights).numpy()
    expected_ema = momentum * m1 + (1 - momentum) * m2
    assert float(ema.numpy()) == pytest.approx(expected_ema, rel=1e-6)
    np.testing.assert_allclose(y2, 4.0 * y1, rtol=1e-6)
    assert np.abs(y2).max() == pytest.approx(m2, rel=1e-6)

    # Inference: the moving average is the range, whatever the batch's; the
    # variable is left alone.
    x3 = x1 * 8.0
    y3 = quantizer(tf.constant(x3), training=False, weights=weights).numpy()
    assert float(ema.numpy()) == pytest.approx(expected_ema, rel=1e-6)
    assert np.abs(y3).max() == pytest.approx(expected_ema, rel=1e-6)
    assert_on_grid(y3, expected_ema / q, q)
    inside = np.abs(x3) < expected_ema * (1 - 1e-3)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(np.sign(y3[~inside]), np.sign(x3[~inside]))
    np.testing.assert_allclose(np.abs(y3[~inside]), expected_ema, rtol=1e-6)

    # And it keeps following m·ema + (1 - m)·batch_max over several steps.
    running = expected_ema
    for scale in (0.5, 2.0, 1.0):
        xb = x1 * scale
        quantizer(tf.constant(xb), training=True, weights=weights)
        running = momentum * running + (1 - momentum) * float(np.abs(xb).max())
        assert float(ema.numpy()) == pytest.approx(running, rel=1e-5)


def test_activation_quantizer_updates_ema_inside_tf_function():
    quantizer = ActivationQuantizer(8, ema_momentum=0.5)
    weights = quantizer.build(tf.TensorShape([None, 3]), "act", activation_holder())
    step = tf.function(lambda x: quantizer(x, training=True, weights=weights))
    step(tf.constant([[1.0, -2.0, 0.5]]))
    step(tf.constant([[4.0, 0.0, 0.0]]))
    assert float(weights["range_ema"].numpy()) == pytest.approx(0.5 * 2.0 + 0.5 * 4.0)


def test_activation_quantizer_rejects_bad_momentum():
    for momentum in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            ActivationQuantizer(4, ema_momentum=momentum)


def test_quantized_model_training_uses_batch_range_inference_uses_ema():
    """Without BN and with zero biases the float net is positively homogeneous.

    Scaling the input by 4 (exact in binary floating point) scales every
    batch range by 4, so in training the quantized output scales exactly by 4;
    at inference the input is clipped at the moving average of the first batch.
    """
    model = quantize_model(small_resnet(batchnorm=False), 4, 4, 8, ema_momentum=0.99)
    x = np.random.RandomState(0).uniform(-1, 1, (8,) + IMAGE_SHAPE).astype(np.float32)
    m = float(np.abs(x).max())

    y_train = model(x, training=True).numpy()
    input_ema = input_quantize_layer(model).weights[0]
    assert "range_ema" in input_ema.name
    assert float(input_ema.numpy()) == pytest.approx(m, rel=1e-7)
    emas = [w for w in model.non_trainable_weights if "range_ema" in w.name]
    assert len(emas) > 5 and all(float(w.numpy()) > 0 for w in emas)

    # EMA == current range after the first batch: inference reproduces training.
    y_infer = model(x, training=False).numpy()
    np.testing.assert_allclose(y_infer, y_train, rtol=1e-5, atol=1e-6)

    # At inference a 4× batch is clipped to the first batch's range...
    y_infer4 = model(4 * x, training=False).numpy()
    assert float(input_ema.numpy()) == pytest.approx(m, rel=1e-7)
    assert not np.allclose(y_infer4, 4 * y_train, rtol=1e-2)
    # ...in training it is quantized with its own range.
    y_train4 = model(4 * x, training=True).numpy()
    np.testing.assert_allclose(y_train4, 4 * y_train, rtol=1e-5, atol=1e-5)
    assert float(input_ema.numpy()) == pytest.approx(0.99 * m + 0.01 * 4 * m, rel=1e-6)


# --------------------------------------------------------------------------------------
# quantize_model / plan_model on ResNet20
# --------------------------------------------------------------------------------------


def test_plan_full_resnet20_first_last_8bit_inner_4bit():
    model = resnet20()
    plans, input_bits = plan_model(model, QuantizationSpec())
    kernels = {name: p for name, p in plans.items() if p.weight_bits is not None}
    conv_names = [l.name for l in model.layers if type(l).__name__ == "Conv2D"]
    assert len(conv_names) == 21 and set(kernels) == set(conv_names) | {"logits"}
    assert (kernels["stem"].weight_bits, kernels["stem"].input_bits) == (8, 8)
    assert (kernels["logits"].weight_bits, kernels["logits"].input_bits) == (8, 8)
    assert input_bits == 8
    for name, plan in kernels.items():
        if name not in ("stem", "logits"):
            assert (plan.weight_bits, plan.input_bits) == (4, 4), name
        assert plan.per_channel == (name != "logits"), name
    # The inputs of 4-bit convs are quantized to 4 bits where they are produced.
    assert plans["s1b1_relu1"].output_bits == 4
    assert plans["s3b3_relu2"].output_bits == 8  # read by the 8-bit classifier (via pooling)
    # Conv → BN and BN → ReLU are fused at inference: nothing quantized between.
    assert plans["s1b1_conv1"].output_bits is None and plans["s1b1_conv1_bn"].output_bits is None


def test_sequential_model_first_and_last_layers_8bit():
    """A Sequential model's ``layers`` omit its InputLayer: the first conv must still be found."""
    model = keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        keras.layers.Conv2D(4, 3, name="first"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.Conv2D(4, 3, name="middle"),
        keras.layers.ReLU(name="relu2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(NUM_CLASSES, name="last"),
    ])
    plans, input_bits = plan_model(model, QuantizationSpec(first_last_bits=8, other_tensor_bits=6))
    assert (plans["first"].weight_bits, plans["first"].input_bits) == (8, 8)
    assert (plans["middle"].weight_bits, plans["middle"].input_bits) == (4, 4)
    assert (plans["last"].weight_bits, plans["last"].input_bits) == (8, 8)
    assert input_bits == 8
    quantized = quantize_model(model)
    by_layer = {wrapper.layer.name: quantizer.num_bits for wrapper, _, quantizer in kernel_wrappers(quantized)}
    assert by_layer == {"first": 8, "middle": 4, "last": 8}


@pytest.fixture(scope="module")
def trained_w4a4():
    """A small quantized ResNet20 (W4/A4, first/last W8/A8) trained a few epochs."""
    keras.utils.set_random_seed(0)
    model = quantize_model(small_resnet())
    initial_kernels = {w.name: w.numpy().copy() for _, w, _ in kernel_wrappers(model)}
    x, y = quadrant_task()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0, shuffle=True)
    return model, initial_kernels, history.history["loss"]


def test_quantized_model_trains(trained_w4a4):
    model, _, losses = trained_w4a4
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses


def test_effective_kernels_on_grid_after_training(trained_w4a4):
    model, initial_kernels, _ = trained_w4a4
    wrappers = kernel_wrappers(model)
    assert {w.layer.name for w, _, _ in wrappers} == {
        l.name for l in small_resnet().layers if type(l).__name__ in ("Conv2D", "Dense")
    }
    for wrapper, kernel, quantizer in wrappers:
        name = wrapper.layer.name
        values = kernel.numpy()
        assert not np.array_equal(values, initial_kernels[kernel.name]), f"{name} did not train"
        eff = effective_kernel(quantizer, kernel)
        bits = 8 if name in ("stem", "logits") else 4
        q = 2 ** (bits - 1) - 1
        assert quantizer.num_bits == bits, name
        if name == "logits":
            assert not quantizer.per_channel
            assert len(np.unique(eff)) <= 2 ** bits - 1
            assert_on_grid(eff, np.abs(values).max() / q, q)
        else:
            assert quantizer.per_channel
            assert max(distinct_per_channel(eff)) <= 2 ** bits - 1, name
            assert_on_grid(eff / np_channel_scale(values), 1.0 / q, q)
        # Recomputed from the current kernel (not a stale range from step 0).
        scale = np_channel_scale(values) if quantizer.per_channel else np.abs(values).max()
        np.testing.assert_allclose(eff, np_fake_quant(values, scale, bits), atol=1e-5 * np.max(scale))


def test_forward_pass_uses_the_quantized_kernel(trained_w4a4):
    model = trained_w4a4[0]
    wrapper = model.get_layer("quant_s2b1_conv1")  # 3×3, stride 2, no output quantizer
    kernel, quantizer = wrapper._weight_vars[0][0], wrapper._weight_vars[0][1]
    x = tf.constant(np.random.RandomState(1).randn(2, 8, 8, 4).astype(np.float32))
    quantized = tf.nn.conv2d(x, effective_kernel(quantizer, kernel), 2, "SAME").numpy()
    floating = tf.nn.conv2d(x, kernel, 2, "SAME").numpy()
    for training in (False, True):
        got = wrapper(x, training=training).numpy()
        np.testing.assert_allclose(got, quantized, rtol=1e-5, atol=1e-5)
        assert not np.allclose(got, floating, atol=1e-3)


def test_trained_model_emas_track_batch_ranges(trained_w4a4):
    model = trained_w4a4[0]
    input_ema = float(input_quantize_layer(model).weights[0].numpy())
    x, _ = quadrant_task()
    # The input range is ~1.2 on every batch: the EMA (started at the first
    # batch's range, not at 0) must be close to it after 24 steps.
    assert input_ema == pytest.approx(float(np.abs(x).max()), rel=0.05)


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_other_bit_widths_build_and_quantize(bits):
    model = quantize_model(small_resnet(), weight_bits=bits, activation_bits=bits, first_last_bits=8)
    x = np.random.RandomState(bits).uniform(0, 1, (4,) + IMAGE_SHAPE).astype(np.float32)
    out = model(x, training=True).numpy()
    assert out.shape == (4, NUM_CLASSES) and np.isfinite(out).all()
    for wrapper, kernel, quantizer in kernel_wrappers(model):
        expected = 8 if wrapper.layer.name in ("stem", "logits") else bits
        assert quantizer.num_bits == expected, wrapper.layer.name
        if wrapper.layer.name == "s2b1_conv2":
            eff = effective_kernel(quantizer, kernel)
            assert max(distinct_per_channel(eff)) <= 2 ** bits - 1
            q = 2 ** (bits - 1) - 1
            assert_on_grid(eff / np_channel_scale(kernel.numpy()), 1.0 / q, q)
    assert model.get_layer("quant_s1b1_relu1")._output_quantizers[0].num_bits == bits


def test_layer_bits_override():
    model = quantize_model(small_resnet(), layer_bits={"s1b1_conv2": (2, 3), "stem": (6, 5)})
    by_layer = {wrapper.layer.name: quantizer for wrapper, _, quantizer in kernel_wrappers(model)}
    assert by_layer["s1b1_conv2"].num_bits == 2
    assert by_layer["stem"].num_bits == 6
    assert by_layer["s1b1_conv1"].num_bits == 4 and by_layer["logits"].num_bits == 8
    # The inputs of those layers: quantized where they are produced.
    assert model.get_layer("quant_s1b1_relu1")._output_quantizers[0].num_bits == 3
    assert input_quantize_layer(model).quantizer.num_bits == 5
    with pytest.raises(ValueError, match="nope"):
        quantize_model(small_resnet(), layer_bits={"nope": (4, 4)})
    with pytest.raises(ValueError):
        quantize_model(small_resnet(), layer_bits={"s1b1_conv2": (4, 1)})


def test_invalid_arguments_raise_value_error():
    model = small_resnet()
    with pytest.raises(ValueError, match="scheme"):
        quantize_model(model, scheme="tfmot_default_4bit")
    for kwargs in ({"weight_bits": 1}, {"activation_bits": 9}, {"first_last_bits": 4.5}, {"weight_bits": True}):
        with pytest.raises(ValueError):
            quantize_model(model, **kwargs)


@pytest.mark.parametrize("scheme", ["tfmot_default_8bit", "tfmot_n_bit"])
def test_tfmot_peer_schemes_build_and_run(scheme):
    model = quantize_model(small_resnet(), 4, 4, scheme=scheme)
    assert isinstance(model, keras.Model)
    assert not any(isinstance(q, WeightQuantizer) for _, _, q in kernel_wrappers(model))
    x = np.random.RandomState(0).uniform(0, 1, (4,) + IMAGE_SHAPE).astype(np.float32)
    for training in (True, False):
        out = model(x, training=training).numpy()
        assert out.shape == (4, NUM_CLASSES) and np.isfinite(out).all()


def test_keras3_model_raises_type_error_naming_tf_keras():
    # Keras 3 is imported in a child process so that this process keeps only tf_keras.
    code = textwrap.dedent(
        """
        import tfq_noise
        import keras
        assert keras.__version__.startswith("3"), keras.__version__
        from tfq_noise.quantization import quantize_model
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        try:
            quantize_model(model)
        except TypeError as error:
            print("TYPEERROR:", error)
        else:
            print("NO ERROR")
        """
    )
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=120
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(("TYPEERROR", "NO ERROR"))]
    assert result.returncode == 0 and lines, result.stderr[-2000:]
    assert lines[0].startswith("TYPEERROR") and "tf_keras" in lines[0], lines[0]


# --------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="tfmot 0.8.1 with tf_keras 2.21: a .keras archive of a quantized model "
                   "does not load (QuantizeLayer builds twice; QuantizeWrapper saves its inner layer's weights "
                   "as its own). The project saves weights and rebuilds models from their config instead.")
def test_keras_archive_round_trip_in_safe_mode(trained_w4a4, tmp_path):
    model = trained_w4a4[0]
    x = np.random.RandomState(5).uniform(0, 1.2, (8,) + IMAGE_SHAPE).astype(np.float32)
    path = str(tmp_path / "quantized.keras")
    model.save(path)
    with quantize_scope():
        loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_save_and_load_give_identical_predictions(trained_w4a4, tmp_path):
    """The project's way: weights into a model rebuilt by code (no code deserialized)."""
    model = trained_w4a4[0]
    x = np.random.RandomState(5).uniform(0, 1.2, (8,) + IMAGE_SHAPE).astype(np.float32)
    expected = model.predict(x, verbose=0)

    weights_path = str(tmp_path / "quantized.weights.h5")
    model.save_weights(weights_path)
    fresh = quantize_model(small_resnet())
    assert not np.allclose(fresh.predict(x, verbose=0), expected)
    fresh.load_weights(weights_path)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), expected)
    ema = {w.name.split("/")[0]: float(w.numpy()) for w in fresh.weights if "range_ema" in w.name}
    assert ema and all(v > 0 for v in ema.values())


# --------------------------------------------------------------------------------------
# TFLite export
# --------------------------------------------------------------------------------------


def test_tflite_int8_ops_and_w4_grid_after_bn_folding():
    """One conversion: inner convs W4/A8, stem and classifier W8/A8, BN kept.

    Every CONV_2D / FULLY_CONNECTED must run on int8 inputs and weights; the
    inner convs, once BN is folded into them, must still hold ≤ 15 integer
    values per output channel (|k| ≤ 7), the stem and classifier ≤ 255.
    """
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(1)
    base = small_resnet()
    rng = np.random.RandomState(0)
    for layer in base.layers:  # BN statistics far from identity, some negative γ
        if type(layer).__name__ == "BatchNormalization":
            c = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(-2, 2, c).astype(np.float32), rng.randn(c).astype(np.float32),
                0.1 * rng.randn(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32),
            ])
    model = quantize_model(base, weight_bits=4, activation_bits=8, first_last_bits=8)
    x = rng.uniform(0, 1, (16,) + IMAGE_SHAPE).astype(np.float32)
    model(x, training=True)  # sets the activation ranges

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    n_convs = sum(type(l).__name__ == "Conv2D" for l in base.layers)
    assert [op["op_name"] for op in ops].count("CONV_2D") == n_convs
    assert [op["op_name"] for op in ops].count("FULLY_CONNECTED") == 1

    w4_convs = 0
    for op in ops:
        data, weights = (tensors[i] for i in op["inputs"][:2])
        assert data["dtype"] == np.int8 and weights["dtype"] == np.int8, (op["op_name"], weights["name"])
        w = interpreter.get_tensor(weights["index"])  # [out, ...] for both op types
        scales = weights["quantization_parameters"]["scales"]
        assert len(scales) in (1, w.shape[0])
        counts = [len(np.unique(w[c])) for c in range(w.shape[0])]
        if op["op_name"] == "CONV_2D" and np.abs(w).max() <= 7:
            w4_convs += 1
            assert max(counts) <= 15
            assert len(scales) == w.shape[0]  # per channel
        else:  # stem and classifier: 8 bits
            assert np.abs(w).max() == 127 and max(counts) <= 255
    assert w4_convs == n_convs - 1

    # The integer model computes what the Keras model computes at inference.
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    sample = x[:1]
    interpreter.set_tensor(inp["index"], sample.astype(inp["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])
    expected = model(sample, training=False).numpy()
    np.testing.assert_allclose(logits, expected, atol=0.1 * np.abs(expected).max())


def test_saved_weights_hold_the_quantized_model_only(tmp_path):
    """What quantize_model keeps of the float model it was made from (for export) is not part of the quantized
    model's variables: its saved weights are its own layers' and load into a model quantized anew."""
    import h5py

    def build():
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="stem"),
                                 keras.layers.ReLU(name="relu"), keras.layers.GlobalAveragePooling2D(name="gap"),
                                 keras.layers.Dense(2, name="head")])

    qat = quantize_model(build(), weight_bits=4, activation_bits=4)
    path = tmp_path / "model.weights.h5"
    qat.save_weights(str(path))
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["layers", "vars"]  # no other object (the float model) saved beside the layers
        assert len(f["layers"]) == len(qat.layers)
    fresh = quantize_model(build(), weight_bits=4, activation_bits=4)
    fresh.load_weights(str(path))
    for a, b in zip(qat.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

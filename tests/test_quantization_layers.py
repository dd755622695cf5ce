"""The paper's quantizer on more layer types: depthwise / separable convs, pass-through layers,
first/last-layer detection through preprocessing and output activations, clear errors.

Everything runs on tiny models (≤ 16×16 inputs, a few filters, a couple of steps);
MobileNetV2 / EfficientNetB0 are only planned here (building and planning them is
fast), their full quantize-and-train check is a script (see docs/quantizer.md).
"""

from __future__ import annotations

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf

from tfq_noise import keras
from tfq_noise.quantization import (
    QuantizationSpec,
    WeightQuantizer,
    plan_model,
    quantize_model,
)
from tfq_noise.quantization import ops
from tfq_noise.quantization.scheme import split_layers

SHAPE = (16, 16, 3)


def kernel_wrappers(model):
    """{layer name: (kernel variable, WeightQuantizer)} for each quantized kernel."""
    found = {}
    for layer in model.layers:
        for weight, quantizer, _ in getattr(layer, "_weight_vars", []):
            if isinstance(quantizer, WeightQuantizer):
                found[layer.layer.name] = (weight, quantizer)
    return found


def effective(quantizer, kernel):
    return quantizer(kernel, training=False, weights={}).numpy()


def depthwise_distinct(eff):
    """Distinct values of each output channel (in × multiplier) of a depthwise kernel."""
    flat = eff.reshape(-1, eff.shape[-2] * eff.shape[-1])
    return [len(np.unique(flat[:, c])) for c in range(flat.shape[1])]


def train_two_steps(model, n_classes=3, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 1, (8,) + tuple(model.input_shape[1:])).astype(np.float32)
    y = rng.randint(0, n_classes, 8)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isfinite(model.predict(x[:2], verbose=0)).all()
    return x


# --------------------------------------------------------------------------------------
# DepthwiseConv2D: one range per output channel (in_channels × depth_multiplier)
# --------------------------------------------------------------------------------------


def spread_depthwise_kernel(shape=(5, 5, 4, 2), seed=0):
    """Channels (c, m) whose magnitudes span 6 decades: any shared range crushes the small ones."""
    rng = np.random.RandomState(seed)
    w = rng.randn(*shape).astype(np.float32)
    magnitudes = np.logspace(-3, 2, shape[2] * shape[3]).reshape(shape[2], shape[3])
    return (w * magnitudes).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_depthwise_kernel_one_range_per_output_channel(bits):
    w = spread_depthwise_kernel()
    q = 2 ** (bits - 1) - 1
    scale = ops.depthwise_scale(tf.constant(w)).numpy()
    assert scale.shape == (4, 2)
    np.testing.assert_allclose(scale, np.abs(w).max(axis=(0, 1)), rtol=1e-6)

    quantizer = WeightQuantizer(bits, per_channel=True, depthwise=True)
    eff = effective(quantizer, tf.constant(w))
    assert eff.shape == w.shape
    for c in range(w.shape[2]):
        for m in range(w.shape[3]):
            channel, s = eff[:, :, c, m], scale[c, m]
            assert len(np.unique(channel)) <= 2 ** bits - 1
            # The channel's own max maps to the top of the grid (±q): not crushed to 0 by another's range.
            assert np.isclose(np.abs(channel).max(), s, rtol=1e-5), (c, m)
            k = channel * q / s
            np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    # Equivalent to quantizing the kernel viewed as (kh, kw, C·M), TFLite's depthwise layout.
    flat = w.reshape(5, 5, 8)
    expected = ops.fake_quant_per_channel(flat, bits).numpy().reshape(w.shape)
    np.testing.assert_allclose(eff, expected, rtol=1e-6, atol=1e-9)


def test_depthwise_ranges_differ_from_last_axis_and_per_tensor():
    """What tfmot's per-last-axis (= per multiplier) and a per-tensor range would do: crush channels."""
    w = spread_depthwise_kernel(shape=(5, 5, 4, 1))
    ours = effective(WeightQuantizer(4, depthwise=True), tf.constant(w))
    last_axis = effective(WeightQuantizer(4, per_channel=True, depthwise=False), tf.constant(w))
    per_tensor = effective(WeightQuantizer(4, per_channel=False, depthwise=True), tf.constant(w))
    smallest = (slice(None), slice(None), 0, 0)
    assert np.abs(ours[smallest]).max() > 0
    assert np.all(last_axis[smallest] == 0) and np.all(per_tensor[smallest] == 0)


def test_depthwise_gradient_is_straight_through():
    w = tf.Variable(spread_depthwise_kernel())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(WeightQuantizer(4, depthwise=True)(w, training=True, weights={}) * 3.0)
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), 3.0)


def small_depthwise_cnn():
    """The user report's model: Conv → BN → ReLU → DepthwiseConv2D → BN → ReLU → Conv → GAP → Dense."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(5, depth_multiplier=2, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_small_cnn_with_depthwise_conv_quantizes_trains_and_stays_on_grid():
    keras.utils.set_random_seed(0)
    base = small_depthwise_cnn()
    plans, _ = plan_model(base, QuantizationSpec())
    assert (plans["dw"].weight_bits, plans["dw"].input_bits, plans["dw"].per_channel) == (4, 4, True)
    assert plans["dw"].output_bits is None  # folded with its BN
    model = quantize_model(base)
    x = train_two_steps(model)
    kernels = kernel_wrappers(model)
    assert {name: q.num_bits for name, (_, q) in kernels.items()} == {"stem": 8, "dw": 4, "pw": 4, "logits": 8}
    kernel, quantizer = kernels["dw"]
    assert quantizer.depthwise and quantizer.per_channel and kernel.shape == (5, 5, 4, 2)
    eff = effective(quantizer, kernel)
    assert max(depthwise_distinct(eff)) <= 15
    np.testing.assert_allclose(np.abs(eff).max(axis=(0, 1)), np.abs(kernel.numpy()).max(axis=(0, 1)), rtol=1e-5)
    # The layer computes with the quantized kernel.
    wrapper = model.get_layer("quant_dw")
    features = tf.constant(np.random.RandomState(1).randn(2, 16, 16, 4).astype(np.float32))
    expected = tf.nn.depthwise_conv2d(features, eff, [1, 1, 1, 1], "SAME").numpy()
    np.testing.assert_allclose(wrapper(features, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert x is not None


# --------------------------------------------------------------------------------------
# SeparableConv2D: split into DepthwiseConv2D + 1×1 Conv2D, both quantized per channel
# --------------------------------------------------------------------------------------


def separable_model():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="stem")(inputs)
    x = keras.layers.SeparableConv2D(6, 3, depth_multiplier=2, strides=2, activation="relu", name="sep")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_separable_conv_is_split_with_the_same_function_and_names():
    keras.utils.set_random_seed(0)
    base = separable_model()
    split = split_layers(base)
    assert [type(l).__name__ for l in split.layers if l.name.startswith("sep")] == ["DepthwiseConv2D", "Conv2D"]
    assert {"sep_depthwise", "sep_pointwise"} <= {l.name for l in split.layers}
    x = np.random.RandomState(0).randn(2, *SHAPE).astype(np.float32)
    np.testing.assert_allclose(split(x).numpy(), base(x).numpy(), rtol=1e-4, atol=1e-5)
    assert split_layers(split) is split  # nothing left to split

    plans, _ = plan_model(base, QuantizationSpec())
    assert "sep" not in plans
    assert (plans["sep_depthwise"].weight_bits, plans["sep_pointwise"].weight_bits) == (4, 4)
    assert plans["sep_depthwise"].output_bits == 4  # the tensor between them: the pointwise conv's input

    model = quantize_model(base, layer_bits={"sep_pointwise": (3, 4)})
    train_two_steps(model)
    kernels = kernel_wrappers(model)
    dw_kernel, dw_quantizer = kernels["sep_depthwise"]
    pw_kernel, pw_quantizer = kernels["sep_pointwise"]
    assert dw_quantizer.depthwise and max(depthwise_distinct(effective(dw_quantizer, dw_kernel))) <= 15
    pw = effective(pw_quantizer, pw_kernel).reshape(-1, pw_kernel.shape[-1])
    assert pw_quantizer.per_channel and max(len(np.unique(pw[:, c])) for c in range(pw.shape[1])) <= 7


# --------------------------------------------------------------------------------------
# Conv/Dense with an activation TFLite cannot fuse (swish, sigmoid, softmax): split in two
# --------------------------------------------------------------------------------------


def squeeze_excite_model():
    """EfficientNet's squeeze-and-excitation branch in small, and a softmax classifier."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_act")(x)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(x)
    se = keras.layers.Conv2D(4, 1, activation="swish", name="se_reduce")(se)
    se = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(se)
    x = keras.layers.Multiply(name="se_excite")([x, se])
    x = keras.layers.Conv2D(8, 3, activation="relu", name="body")(x)  # fusable: stays whole
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))


def test_non_fusable_activations_are_split_and_the_model_converts_to_integers_only():
    from tfq_noise.deploy import convert, flatbuffer

    keras.utils.set_random_seed(0)
    base = squeeze_excite_model()
    split = split_layers(base)
    activations = {l.name: l.get_config().get("activation") for l in split.layers}
    assert activations["se_reduce"] == activations["se_expand"] == activations["predictions"] == "linear"
    assert (activations["se_reduce_activation"], activations["se_expand_activation"],
            activations["predictions_activation"]) == ("swish", "sigmoid", "softmax")
    assert activations["body"] == "relu" and "body_activation" not in activations
    x = np.random.RandomState(0).uniform(0, 1, (2,) + SHAPE).astype(np.float32)
    np.testing.assert_allclose(split(x).numpy(), base(x).numpy(), rtol=1e-5, atol=1e-6)
    assert split_layers(split) is split

    plans, _ = plan_model(base, QuantizationSpec())
    # the pre-activation tensors now exist as layer outputs, with an 8-bit range
    assert plans["se_reduce"].output_bits == plans["se_expand"].output_bits == 8
    assert plans["predictions"].weight_bits == 8  # still the last layer, seen through its activation
    assert plans["se_reduce_activation"].output_bits == 4  # read by the W4/A4 se_expand

    # A8, as the export converts it (the converter takes no 4-bit activations); W4 kept
    model = quantize_model(base, activation_bits=8)
    train_two_steps(model)
    summary = flatbuffer.summarize(convert.convert_qat_int8(model))
    assert flatbuffer.integer_problems(summary, ("INT8", "INT4")) == []
    assert summary.op_counts["LOGISTIC"] >= 2 and summary.op_counts["CONV_2D"] == 4


# --------------------------------------------------------------------------------------
# Pass-through layers and first / last layer detection
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["softmax_layer", "activation_softmax", "dense_softmax"])
def test_first_and_last_8bit_through_preprocessing_and_output_activation(head):
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = keras.layers.Normalization(mean=[0.5] * 3, variance=[0.25] * 3, name="norm")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(4, 3, name="stem")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    x = keras.layers.Conv2D(4, 3, name="middle")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    if head == "dense_softmax":
        outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    else:
        x = keras.layers.Dense(3, name="classifier")(x)
        outputs = (keras.layers.Softmax(name="probs") if head == "softmax_layer"
                   else keras.layers.Activation("softmax", name="probs"))(x)
    base = keras.Model(inputs, outputs)
    plans, input_bits = plan_model(base, QuantizationSpec())
    assert (plans["stem"].weight_bits, plans["stem"].input_bits) == (8, 8)
    assert (plans["middle"].weight_bits, plans["middle"].input_bits) == (4, 4)
    assert (plans["classifier"].weight_bits, plans["classifier"].input_bits) == (8, 8)
    assert input_bits == 8
    assert plans["stem"].output_bits is None  # Conv → ReLU6 fused
    assert plans["relu6"].output_bits == 4
    assert "pad" not in plans and "drop" not in plans  # transparent
    model = quantize_model(base)
    assert {n: q.num_bits for n, (_, q) in kernel_wrappers(model).items()} == {"stem": 8, "middle": 4, "classifier": 8}


def test_sequential_with_rescaling_first_and_softmax_last():
    base = keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.Conv2D(4, 3, name="first"),
        keras.layers.Activation("relu6"),
        keras.layers.Conv2D(4, 3, name="middle"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="last"),
        keras.layers.Softmax(),
    ])
    plans, _ = plan_model(base, QuantizationSpec())
    assert [plans[n].weight_bits for n in ("first", "middle", "last")] == [8, 4, 8]
    assert plans["first"].output_bits is None  # Activation("relu6") fused


def test_relu_with_other_limits_is_not_fused():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    x = keras.layers.ReLU(max_value=3.0)(x)
    x = keras.layers.Conv2D(4, 3, name="b")(x)
    x = keras.layers.LeakyReLU()(x)
    x = keras.layers.Flatten()(x)
    plans, _ = plan_model(keras.Model(inputs, keras.layers.Dense(2, name="c")(x)), QuantizationSpec())
    assert plans["a"].output_bits == 8 and plans["b"].output_bits == 8


def squeeze_excite_block():
    """EfficientNet's and MobileNetV2's pass-through layers in one small model."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("swish")(x)
    skip = x
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("swish")(x)
    se = keras.layers.GlobalAveragePooling2D()(x)
    se = keras.layers.Reshape((1, 1, 8))(se)
    se = keras.layers.Conv2D(2, 1, activation="swish", name="se_reduce")(se)
    se = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(se)
    x = keras.layers.Multiply()([x, se])
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Add()([x, skip])
    x = keras.layers.Concatenate()([x, skip])
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classifier")(x))


def test_squeeze_excite_pass_through_layers_quantize_and_train():
    keras.utils.set_random_seed(0)
    base = squeeze_excite_block()
    plans, _ = plan_model(base, QuantizationSpec())
    assert {n for n, p in plans.items() if p.weight_bits == 8} == {"stem", "classifier"}
    assert {n for n, p in plans.items() if p.weight_bits == 4} == {"dw", "se_reduce", "se_expand", "project"}
    model = quantize_model(base)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy())
    x = np.random.RandomState(0).uniform(0, 255, (8,) + SHAPE).astype(np.float32)
    assert np.isfinite(model.fit(x, np.arange(8) % 3, batch_size=4, verbose=0).history["loss"]).all()
    assert np.isfinite(model.predict(x[:2], verbose=0)).all()


def test_mobilenetv2_plan_first_last_8bit_rest_4bit():
    """Planning only (quantizing and training MobileNetV2 / EfficientNetB0 takes minutes: see docs/quantizer.md)."""
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35)
    plans, input_bits = plan_model(base, QuantizationSpec())
    eight = {n for n, p in plans.items() if p.weight_bits == 8}
    assert eight == {"Conv1", "predictions"}
    kernels = [l for l in base.layers if type(l).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    assert all(plans[l.name].weight_bits in (4, 8) for l in kernels)
    assert all(plans[l.name].per_channel for l in kernels if type(l).__name__ == "DepthwiseConv2D")
    assert input_bits == 8


def test_efficientnetb0_plan_gives_squeeze_excite_convs_a_range_before_their_activation():
    """EfficientNet's SE convs carry swish/sigmoid inside the Conv2D; split, the tensor before each activation
    is quantized (8 bits), which is what lets the converter run them in int8 (the export check is in docs/quantizer.md)."""
    base = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10,
                                             classifier_activation=None)
    plans, _ = plan_model(base, QuantizationSpec())
    se_convs = [n for n in plans if n.endswith(("_se_reduce", "_se_expand"))]
    assert len(se_convs) == 32
    assert all(plans[n].weight_bits == 4 and plans[n].output_bits == 8 for n in se_convs)
    assert all(plans[f"{n}_activation"].output_bits == (4 if n.endswith("reduce") else 8) for n in se_convs)
    assert {n for n, p in plans.items() if p.weight_bits == 8} == {"stem_conv", "predictions"}


# --------------------------------------------------------------------------------------
# Unsupported layers: a clear error
# --------------------------------------------------------------------------------------


def test_unsupported_layer_with_weights_names_layer_class_and_remedy():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2DTranspose(4, 3, name="upsample")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match=r"upsample \(Conv2DTranspose\) has weights this scheme cannot quantize") as err:
        quantize_model(model)
    message = str(err.value)
    assert "DepthwiseConv2D" in message and "SeparableConv2D" in message and "tfmot_default_8bit" in message


def test_nested_model_error_says_to_flatten():
    inner = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(2, 3)], name="backbone")
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inner(inputs))))
    with pytest.raises(ValueError, match=r"backbone \(Sequential\) is a nested model.*flat"):
        plan_model(model, QuantizationSpec())


# --------------------------------------------------------------------------------------
# Unsigned grid for non-negative tensors (an option; the paper's symmetric grid is the default)
# --------------------------------------------------------------------------------------


def test_relu_output_uses_half_the_symmetric_grid_and_all_of_the_unsigned_one():
    from tfq_noise.quantization import ActivationQuantizer

    x = tf.constant(np.linspace(0.0, 1.0, 1001, dtype=np.float32))
    holder = keras.layers.Layer(name="holder")
    got = {}
    for unsigned in (False, True):
        quantizer = ActivationQuantizer(4, unsigned=unsigned)
        weights = quantizer.build(x.shape, f"q{int(unsigned)}", holder)
        got[unsigned] = quantizer(x, training=True, weights=weights).numpy()
    assert len(np.unique(got[False])) == 8  # 0..7 of the grid -7..7
    assert len(np.unique(got[True])) == 16  # 0..15
    k = got[True] * 15
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)
    assert got[True].max() == pytest.approx(1.0) and got[True].min() == 0.0


def test_unsigned_activations_option_marks_non_negative_tensors():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0, name="relu")(x)
    x = keras.layers.Conv2D(4, 3, name="b")(x)
    x = keras.layers.Activation("swish", name="swish")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    base = keras.Model(inputs, keras.layers.Dense(3, name="d")(x))
    default, _ = plan_model(base, QuantizationSpec())
    assert not any(p.unsigned_output for p in default.values())
    plans, _ = plan_model(base, QuantizationSpec(unsigned_activations=True))
    assert {n for n, p in plans.items() if p.unsigned_output and p.output_bits} == {"relu", "c"}
    model = quantize_model(base, unsigned_activations=True)
    assert model.get_layer("quant_relu").quantize_config.unsigned_output
    assert not model.get_layer("quant_swish").quantize_config.unsigned_output
    x = train_two_steps(model)
    # Inference: the ReLU6 output is on the unsigned 4-bit grid [0, ema] (16 levels).
    probe = keras.Model(model.inputs, model.get_layer("quant_relu").output)
    values = probe(x, training=False).numpy()
    (ema,) = [v for v in model.get_layer("quant_relu").weights if "range_ema" in v.name]
    k = values * 15 / ema.numpy()
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    assert values.min() >= 0 and len(np.unique(values)) <= 16

"""tf_keras.applications models by name (``--model=MobileNetV2 --model_kwargs=alpha=0.35``)."""

from __future__ import annotations

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)

from tfq_noise.config import RunConfig, check_model_arguments
from tfq_noise.models import APPLICATIONS, MODELS, build_model


def test_applications_are_models_built_untrained_with_logits():
    assert {"MobileNetV2", "ResNet50", "EfficientNetB0"} <= set(APPLICATIONS) <= set(MODELS)
    model = build_model("MobileNetV2", num_classes=7, input_shape=(32, 32, 1), alpha=0.35)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 7)
    assert model.layers[-1].get_config()["activation"] == "linear"  # logits
    out = model(np.zeros((2, 32, 32, 1), np.float32), training=False).numpy()
    assert not np.allclose(out.sum(axis=1), 1.0)  # not a softmax


def test_application_kwargs_are_checked_like_the_project_models():
    check_model_arguments("MobileNetV2", {"alpha": 0.35})
    RunConfig(model="MobileNetV2", model_kwargs={"alpha": 0.35, "pooling": "avg"})
    for kwargs, match in (({"alpah": 0.35}, "unexpected keyword"), ({"weights": "imagenet"}, "unexpected keyword"),
                          ({"classes": 3}, "unexpected keyword"), ({"alpha": "big"}, "should be a float")):
        with pytest.raises(ValueError, match=match):
            RunConfig(model="MobileNetV2", model_kwargs=kwargs)
    with pytest.raises(ValueError, match="cannot take the method's architecture changes"):
        RunConfig(model="MobileNetV2", method="dropout")
    RunConfig(model="MobileNetV2", method="quantization+early_stopping")  # no architecture change: fine
    with pytest.raises(ValueError, match="takes no"):
        build_model("MobileNetV2", num_classes=3, dropout_rate=0.1)


def test_bn_momentum_sets_every_batchnorm_and_survives_cloning():
    from tfq_noise import keras

    model = build_model("MobileNetV2", num_classes=3, input_shape=(32, 32, 1), alpha=0.35, bn_momentum=0.9)
    norms = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 52 and all(layer.momentum == 0.9 for layer in norms)
    clone = keras.models.clone_model(model)  # how QAT rebuilds a model: from each layer's config
    assert all(layer.momentum == 0.9 for layer in clone.submodules
               if isinstance(layer, keras.layers.BatchNormalization))
    # the moving mean follows at the rate asked: one training step moves it by (1 - momentum) of the way
    first = norms[0]
    before = first.moving_mean.numpy().copy()
    model(np.random.default_rng(0).normal(3.0, 1.0, (8, 32, 32, 1)).astype(np.float32), training=True)
    stem = keras.Model(model.input, first.input)
    batch_mean = stem(np.random.default_rng(0).normal(3.0, 1.0, (8, 32, 32, 1)).astype(np.float32)).numpy()
    np.testing.assert_allclose(first.moving_mean.numpy(), 0.9 * before + 0.1 * batch_mean.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    default = build_model("MobileNetV2", num_classes=3, input_shape=(32, 32, 1), alpha=0.35)
    assert {layer.momentum for layer in default.submodules if isinstance(layer, keras.layers.BatchNormalization)} \
        == {0.999}
    RunConfig(model="MobileNetV2", model_kwargs={"alpha": 0.35, "bn_momentum": 0.99})
    for bad in (1.0, -0.1, "fast", True):
        with pytest.raises(ValueError, match="bn_momentum must be in"):
            build_model("MobileNetV2", num_classes=3, input_shape=(32, 32, 1), bn_momentum=bad)


def test_help_lists_the_applications():
    from experiments import run

    text = run.help_text()
    assert "MobileNetV2" in text and "resnet20" in text


def test_mobilenetv2_w4a4_trains_and_exports_int8_with_depthwise_on_grid(cifar10_dir, tmp_path):
    """Acceptance: MobileNetV2 (alpha 0.35) W4/A4 (first/last W8/A8) trains a few steps and exports as a verified
    full-integer .tflite whose W4 kernels, the depthwise ones included, hold <= 15 integers per output channel."""
    import json

    from tfq_noise.data import DataPaths
    from tfq_noise.deploy import export, flatbuffer
    from tfq_noise.train import release_memory, train

    config = RunConfig(experiment="apps", method="quantization", model="MobileNetV2", model_kwargs={"alpha": 0.35},
                       epochs=1, train_size=128, eval_train_size=64)
    run_dir = tmp_path / config.run_name
    train(config, run_dir, DataPaths(cifar10_dir=str(cifar10_dir)), print_fn=lambda *a, **k: None)
    release_memory()
    output = tmp_path / "mnv2.tflite"
    assert export.main([f"--run_dir={run_dir}", f"--output={output}", f"--cifar10_dir={cifar10_dir}",
                        "--eval_images=100", "--range_batches=2", "--tolerance_points=3", "--min_agreement=0.9",
                        "--trained_tolerance_points=5"]) == 0
    report = json.loads(output.with_name(output.name + ".json").read_text())
    assert report["integer_check"] == "passed" and report["ops"]["DEPTHWISE_CONV_2D"] == 17
    grid = report["grid_check"]
    assert grid["passed"]
    depthwise = {name: layer for name, layer in grid["layers"].items() if layer["op"] == "DEPTHWISE_CONV_2D"}
    assert len(depthwise) == 17 and all(layer.get("weight_bits") == 4 for layer in depthwise.values())
    assert all(layer["max_distinct_per_channel"] <= 15 for layer in depthwise.values())
    # the stem and the classifier stay 8-bit (first/last W8/A8)
    assert sum(layer.get("weight_bits") is None for layer in grid["layers"].values()) == 2
    summary = flatbuffer.summarize(output.read_bytes())
    assert flatbuffer.integer_problems(summary) == []

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


def test_help_lists_the_applications():
    from experiments import run

    text = run.help_text()
    assert "MobileNetV2" in text and "resnet20" in text

"""The public Python API (docs/api.md) on a tiny tf_keras model of the user's own: quantize_model, methods for a
plain ``model.fit``, the memorization callback and label-error finding."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import tfq_noise
from tfq_noise import keras

NUM_CLASSES = 4
SHAPE = (12, 12, 3)


def tiny_cnn(seed: int = 0):
    """The kind of model a notebook builds: Sequential, logits out."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem"),
        keras.layers.Conv2D(8, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(NUM_CLASSES, name="logits"),
    ])


def noisy_task(n: int = 192, seed: int = 0, noise: float = 0.4):
    """A learnable task (the label is the brightest channel-quadrant), a share ``noise`` of labels re-drawn wrong."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, NUM_CLASSES, n)
    images = rng.normal(0, 0.3, (n, *SHAPE)).astype(np.float32)
    half = SHAPE[0] // 2
    for i, c in enumerate(clean):
        images[i, (c // 2) * half:(c // 2 + 1) * half, (c % 2) * half:(c % 2 + 1) * half] += 1.0
    noisy = clean.copy()
    flip = rng.random(n) < noise
    noisy[flip] = (clean[flip] + rng.integers(1, NUM_CLASSES, flip.sum())) % NUM_CLASSES
    return images, noisy, clean


def test_the_public_names_load_on_first_use():
    code = ("import sys, tfq_noise; heavy = ('tensorflow_model_optimization', 'cleanlab'); "
            "assert not [m for m in heavy if m in sys.modules], 'imported eagerly'; "
            "assert {'quantize_model', 'method', 'MemorizationCallback', 'find_label_errors'} <= set(dir(tfq_noise)); "
            "tfq_noise.quantize_model; assert 'tensorflow_model_optimization' in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert tfq_noise.quantize_model is importlib.import_module("tfq_noise.quantization").quantize_model
    with pytest.raises(AttributeError, match="no attribute 'quantise_model'"):
        tfq_noise.quantise_model  # noqa: B018


def _kernels(model):
    """(layer name, kernel as inference uses it) of every quantized kernel."""
    out = []
    for layer in model.layers:
        for weight, quantizer, _ in getattr(layer, "_weight_vars", []):
            out.append((layer.layer.name, quantizer(weight, training=False, weights={}).numpy()))
    return out


def test_quantize_model_puts_a_users_kernels_on_their_grid_after_training():
    images, noisy, _ = noisy_task(128)
    model = tfq_noise.quantize_model(tiny_cnn(), weight_bits=4, activation_bits=4)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {name: k.copy() for name, k in _kernels(model)}
    model.fit(images, noisy, batch_size=32, epochs=1, verbose=0)
    kernels = dict(_kernels(model))
    assert set(kernels) == {"stem", "conv", "logits"}
    assert not np.array_equal(kernels["conv"], before["conv"])  # it trained
    # W4 inside (per output channel: at most 2^4 - 1 = 15 values), W8 for the first and last layers.
    conv = kernels["conv"].reshape(-1, kernels["conv"].shape[-1])
    assert max(len(np.unique(conv[:, c])) for c in range(conv.shape[1])) <= 15
    steps = conv / (np.abs(conv).max(axis=0) / 7)  # the grid ±7 · max|W| / 7
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    stem = kernels["stem"].reshape(-1, 8)
    assert max(len(np.unique(stem[:, c])) for c in range(8)) > 15  # 8 bits: more levels than W4 allows
    assert len(np.unique(kernels["logits"])) <= 255


def test_a_keras_3_style_or_non_model_input_is_refused_with_the_fix():
    with pytest.raises(TypeError, match="expected a tf_keras.Model"):
        tfq_noise.quantize_model(object())
    with pytest.raises(ValueError, match="quantization_scheme"):
        tfq_noise.method("quantization", quantization_scheme="float")


def test_a_methods_loss_is_its_robust_loss():
    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]], np.float32)
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p_y = p[np.arange(2), labels]
    sce = tfq_noise.method("sce+quantization")
    # α·CE + β·RCE with α = 0.1, β = 1 and log 0 = A = −4: RCE = 4·(1 − p_y).
    np.testing.assert_allclose(np.asarray(sce.loss(NUM_CLASSES)(labels, logits)),
                               0.1 * -np.log(p_y) + 4.0 * (1 - p_y), rtol=1e-5)
    gce = tfq_noise.method("gce", gce_q=0.5)
    np.testing.assert_allclose(np.asarray(gce.loss(NUM_CLASSES)(labels, logits)), (1 - p_y ** 0.5) / 0.5, rtol=1e-5)
    assert sce.name == "sce+quantization" and sce.hparams["weight_bits"] == 4 and gce.hparams["gce_q"] == 0.5
    baseline = tfq_noise.method("baseline").loss(NUM_CLASSES)
    np.testing.assert_allclose(float(baseline(labels, logits)), np.mean(-np.log(p_y)), rtol=1e-5)


def test_a_method_trains_with_plain_fit_and_early_stopping_keeps_its_best_epoch(tmp_path):
    images, noisy, _ = noisy_task(192)
    m = tfq_noise.method("quantization+early_stopping", patience=1, checkpoint_dir=tmp_path / "best")
    model = m.transform_model(tiny_cnn())
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in model.layers)
    model.compile(m.optimizer(1e-2), loss=m.loss(NUM_CLASSES), metrics=m.metrics(NUM_CLASSES))
    history = model.fit(images[:160], noisy[:160], batch_size=32, epochs=2, verbose=0,
                        validation_data=(images[160:], noisy[160:]), callbacks=m.callbacks())
    state = json.loads((tmp_path / "best" / "best_epoch.json").read_text())
    best = int(np.argmax(history.history["val_accuracy"]))
    assert m.selects_best_epoch and state["best_epoch"] == best
    # The model fit leaves is the best epoch's: its validation accuracy is that epoch's.
    _, accuracy = model.evaluate(images[160:], noisy[160:], verbose=0)
    assert accuracy == pytest.approx(history.history["val_accuracy"][best], abs=1e-6)
    # Without a folder, each callbacks() call compares its own fit's epochs, in a folder of its own.
    fresh = tfq_noise.method("early_stopping")
    (first,), (second,) = fresh.callbacks(), fresh.callbacks()
    assert first.dir != second.dir and not list(first.dir.iterdir())


def test_mixup_mixes_the_batches_and_weight_decay_sets_adamw():
    import tensorflow as tf

    images, noisy, _ = noisy_task(64)
    m = tfq_noise.method("mixup")
    batches = m.transform_dataset(tf.data.Dataset.from_tensor_slices((images, noisy)).batch(32), NUM_CLASSES, seed=1)
    x, targets = next(iter(batches))
    targets = targets.numpy()
    assert targets.shape == (32, NUM_CLASSES) and np.allclose(targets.sum(axis=1), 1.0)
    assert ((targets > 0) & (targets < 1)).any()  # mixed pairs, not one-hot labels
    assert type(m.metrics(NUM_CLASSES)[0]).__name__ == "CategoricalAccuracy"
    wd = tfq_noise.method("weight_decay", decay_rule="paper_total", epochs=10, steps_per_epoch=20)
    optimizer = wd.optimizer(1e-3)
    # The paper's total shrinkage exp(−0.704) over this fit's Σ lr = 1e-3 · 200 steps.
    assert type(optimizer).__name__ == "AdamW" and optimizer.weight_decay == pytest.approx(0.704 / 0.2)
    assert wd.summary(1e-3)["weight_decay_total_shrinkage"] == pytest.approx(1 - np.exp(-0.704))
    assert type(tfq_noise.method("gce").optimizer(1e-3)).__name__ == "Adam"


@pytest.mark.parametrize("make, message", [
    (lambda: tfq_noise.method("cleanlab"), "cleanlab trains K fold models"),
    (lambda: tfq_noise.method("pruning"), "pruning needs epochs="),
    (lambda: tfq_noise.method("pruning", prune_structure="unstructured", epochs=4), "needs steps_per_epoch="),
    (lambda: tfq_noise.method("quantization", wieght_bits=2), "unknown hyper-parameter"),
    (lambda: tfq_noise.method("pruning+quantization", epochs=2), "cannot be combined"),
    (lambda: tfq_noise.method("dropout").transform_model(tiny_cnn()), "changes how the model is built"),
    (lambda: tfq_noise.method("baseline", epochs=0), "epochs must be a positive integer"),
])
def test_what_a_plain_fit_cannot_do_is_refused_with_the_reason(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_structured_pruning_prunes_at_its_epoch():
    m = tfq_noise.method("pruning", epochs=4)
    (callback,) = m.callbacks()
    assert type(callback).__name__ == "StructuredPruning" and callback.prune_epoch == 2
    assert m.transform_model(tiny_cnn()).count_params() == tiny_cnn().count_params()  # filters: same model


def test_the_memorization_callback_records_what_its_predictions_say():
    images, noisy, clean = noisy_task(160)
    model = tiny_cnn()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    watch = tfq_noise.MemorizationCallback(images, noisy, clean, keep_predictions=True, training_mode=True)
    history = model.fit(images, noisy, batch_size=32, epochs=2, verbose=0, callbacks=[watch])
    corrupted = noisy != clean
    assert watch.corrupted_count == corrupted.sum() > 0
    assert watch.history["epoch"] == [0, 1] and len(watch.predictions) == 2
    for epoch, predicted in enumerate(watch.predictions):  # a hand computation on the recorded predictions
        assert watch.history["memorized"][epoch] == np.mean(predicted[corrupted] == noisy[corrupted])
        assert watch.history["corrected"][epoch] == np.mean(predicted[corrupted] == clean[corrupted])
        assert watch.history["train_noisy_accuracy"][epoch] == np.mean(predicted == noisy)
    # The last epoch's predictions are the trained model's, in inference mode.
    np.testing.assert_array_equal(watch.predictions[-1], np.argmax(model.predict(images, verbose=0), axis=-1))
    assert history.history["memorized"] == watch.history["memorized"]  # in the epoch logs too
    assert len(watch.history["trainmode_memorized"]) == 2
    state = [v.numpy().copy() for v in model.non_trainable_weights]
    assert "trainmode_memorized" in watch.measure()  # training mode moves BatchNorm's statistics, then restores them
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(state, model.non_trainable_weights))
    assert all(isinstance(v, list) and len(v) == 2 for v in watch.history.values())  # a dict of lists
    assert watch.no_memorization_level(NUM_CLASSES) == pytest.approx(
        [(1 - c) / 3 for c in watch.history["corrected"]])
    ax = watch.plot(label="float")
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [
        [100 * v for v in watch.history["memorized"]], [100 * v for v in watch.history["corrected"]]]
    with pytest.raises(ValueError, match="same examples"):
        tfq_noise.MemorizationCallback(images, noisy[:10], clean)


@pytest.mark.skipif(importlib.util.find_spec("tfq_noise.label_errors") is None,
                    reason="tfq_noise.label_errors is not in this tree")
def test_label_errors_are_found_from_predicted_probabilities():
    from tfq_noise import label_errors

    assert tfq_noise.find_label_errors is label_errors.find_label_errors
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), labels] = 0.9
    wrong = np.array([3, 50, 120])
    probs[wrong] = [0.03, 0.94, 0.03]  # the model is sure of class 1
    labels[wrong] = np.where(labels[wrong] == 1, 0, labels[wrong])  # and the given label is not 1
    found = tfq_noise.find_label_errors(labels, probs)
    assert sorted(found.indices.tolist()) == wrong.tolist()
    assert (found.suggested_label == 1).all()


def test_export_int8_of_a_w4a4_model_and_of_a_float_model(tmp_path):
    """A W4/A4 model of quantize_model exports W4/A8 (ranges re-estimated, checked against the model as
    trained, the W4 kernels on their grid); a float model exports as post-training int8; both files verified."""
    import numpy as np

    import tfq_noise
    from tfq_noise import keras
    from tfq_noise.deploy.flatbuffer import ExportError

    rng = np.random.default_rng(0)
    images = rng.normal(size=(256, 12, 12, 3)).astype("float32")
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int64")

    def build():
        return keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, name="c1"),
                                 keras.layers.BatchNormalization(name="bn1"), keras.layers.ReLU(name="r1"),
                                 keras.layers.Conv2D(8, 3, name="c2"), keras.layers.ReLU(name="r2"),
                                 keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(2, name="out")])

    keras.utils.set_random_seed(0)
    float_model = build()
    qat = tfq_noise.quantize_model(float_model, weight_bits=4, activation_bits=4)
    for model in (qat, float_model):
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, labels, epochs=2, verbose=0)
    report = tfq_noise.export_int8(qat, tmp_path / "w4.tflite", calibration_images=images, eval_images=images,
                                   eval_labels=labels, min_agreement=0.8, trained_tolerance_points=10)
    assert report["kind"] == "qat_int8" and (tmp_path / "w4.tflite").is_file()
    assert report["a8_reestimation"]["activation_bits_exported"] == 8
    assert report["grid_check"]["passed"] and "c2" in str(report["grid_check"])  # the inner conv kept W4
    ptq = tfq_noise.export_int8(float_model, tmp_path / "ptq.tflite", calibration_images=images,
                                eval_images=images, eval_labels=labels, min_agreement=0.8)
    assert ptq["kind"] == "ptq_int8"
    with pytest.raises(ExportError, match="calibration_images is empty"):
        tfq_noise.export_int8(qat, tmp_path / "x.tflite", calibration_images=images[:0], eval_images=images,
                              eval_labels=labels)
    assert not (tmp_path / "x.tflite").exists()

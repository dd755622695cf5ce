"""Tests of ``tfq_noise.methods``: every method changes what it should, and bad settings are refused.

Each check is numeric and against an independent reference (the AdamW decay
factor, cross-entropy against hand-smoothed targets, the L1 norms recorded just
before pruning...), so that a method that silently does nothing fails. Models
are ResNet20 with one block per stage and 8 base filters on 8×8 random images;
the one ``train`` run uses a few hundred CIFAR-10 images.
"""

from __future__ import annotations

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tfq_noise import keras, methods, results
from tfq_noise.callbacks import BestEpochKeeper
from tfq_noise.config import RunConfig
from tfq_noise.methods import StructuredPruning, prunable_layers
from tfq_noise.methods.pruning import filter_l1_norms, smallest_filters_mask
from tfq_noise.quantization import WeightQuantizer
from tfq_noise.tasks import ClassificationTask, MultiLabelTask
from tfq_noise.train import TrainContext, build_run_model, load_trained_model, train

SMALL = {"blocks_per_stage": 1, "base_filters": 8}
SHAPE = (8, 8, 3)
CLASSES = 4


def make_config(method="baseline", hparams=None, **kwargs) -> RunConfig:
    kwargs.setdefault("model_kwargs", SMALL)
    return RunConfig(experiment="test", method=method, hparams=hparams or {}, **kwargs)


def build(config: RunConfig, steps_per_epoch: int = 1, seed: int = 0):
    keras.utils.set_random_seed(seed)
    return build_run_model(config, SHAPE, CLASSES, steps_per_epoch)


def random_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + SHAPE).astype(np.float32), rng.integers(0, CLASSES, n).astype(np.int32)


def zero_loss(y_true, y_pred):
    """A constant loss whose gradient is exactly zero for every weight."""
    return 0.0 * tf.reduce_mean(y_pred)


def kernels(model) -> dict:
    return {w.name: w.numpy().copy() for w in model.trainable_weights if "kernel" in w.name}


def context(epochs, steps_per_epoch, tmp_path=None):
    return TrainContext(epochs, steps_per_epoch, tmp_path or "unused", "val_accuracy")


# --------------------------------------------------------------------------------------
# Weight decay
# --------------------------------------------------------------------------------------


def test_decoupled_weight_decay_shrinks_kernels_adam_does_not():
    """Zero gradients: Adam leaves every weight as it is, AdamW shrinks kernels by (1 - lr·wd) per step."""
    lr, wd, steps = 0.1, 0.5, 3
    moved = {}
    for method, hparams in (("weight_decay", {"weight_decay": wd}), ("baseline", {})):
        config = make_config(method, hparams, learning_rate=lr)
        model = build(config)
        optimizer = config.recipe.optimizer(lr)
        if method == "baseline":
            assert optimizer is None  # the loop's default Adam
            optimizer = keras.optimizers.Adam(lr)
        variables = model.trainable_weights
        before = {v.name: v.numpy().copy() for v in variables}
        for _ in range(steps):
            optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
        moved[method] = (before, {v.name: v.numpy() for v in variables})

    before, after = moved["weight_decay"]
    factor = (1.0 - lr * wd) ** steps  # AdamW: w <- w - lr·wd·w per step; the gradient step is zero
    n_kernels = 0
    for name, value in after.items():
        if "kernel" in name:
            n_kernels += 1
            np.testing.assert_allclose(value, before[name] * factor, rtol=1e-5, atol=1e-7, err_msg=name)
        else:  # biases and BatchNorm scale/shift are excluded from the decay
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert n_kernels == len([l for l in model.layers if type(l).__name__ in ("Conv2D", "Dense")])
    assert any("gamma" in name for name in after)  # gamma starts at 1: its exclusion is observable

    before, after = moved["baseline"]
    for name, value in after.items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"Adam moved {name} without gradient")


def test_l2_weight_decay_adds_the_penalty_to_the_loss():
    wd = 0.01
    config = make_config("weight_decay", {"weight_decay": wd, "weight_decay_type": "l2"})
    assert config.recipe.optimizer(1e-3) is None  # plain Adam, the penalty is in the loss
    model = build(config)
    kernel_layers = [l for l in model.layers if type(l).__name__ in ("Conv2D", "Dense")]
    assert len(model.losses) == len(kernel_layers)
    expected = wd * sum(float(np.sum(np.square(l.kernel.numpy()))) for l in kernel_layers)
    np.testing.assert_allclose(float(tf.add_n(model.losses)), expected, rtol=1e-5)
    # The compiled loss is the data loss plus the penalty.
    x, y = random_data(8)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=zero_loss)
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), expected, rtol=1e-5)
    assert build(make_config()).losses == []


# --------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------


def test_dropout_is_active_in_training_only():
    config = make_config("dropout", {"dropout_rate": 0.5})
    model = build(config)
    dropouts = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    assert [(l.name, l.rate) for l in dropouts] == [("head_dropout", 0.5)]
    plain = build(make_config())
    assert not any(isinstance(l, keras.layers.Dropout) for l in plain.layers)
    plain.set_weights(model.get_weights())
    x = tf.constant(random_data(8)[0])

    # Inference first (training=True calls move the BatchNorm statistics).
    inference = model(x, training=False).numpy()
    np.testing.assert_array_equal(model(x, training=False).numpy(), inference)
    np.testing.assert_allclose(plain(x, training=False).numpy(), inference, rtol=1e-6, atol=1e-6)

    first, second = model(x, training=True).numpy(), model(x, training=True).numpy()
    assert not np.allclose(first, second, atol=1e-4), "dropout does not vary between training calls"
    # Control: without dropout, training calls are deterministic.
    np.testing.assert_allclose(plain(x, training=True).numpy(), plain(x, training=True).numpy(), atol=1e-6)


@pytest.mark.parametrize("position, expected", [
    ("blocks", ["s1b1_dropout", "s2b1_dropout", "s3b1_dropout"]),
    ("stages", ["s1_dropout", "s2_dropout", "s3_dropout"]),
])
def test_dropout_positions(position, expected):
    model = build(make_config("dropout", {"dropout_rate": 0.3, "dropout_position": position}))
    dropouts = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    assert [l.name for l in dropouts] == expected
    assert all(l.rate == 0.3 for l in dropouts)


# --------------------------------------------------------------------------------------
# Label smoothing
# --------------------------------------------------------------------------------------


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_label_smoothing_is_cross_entropy_against_smoothed_targets(alpha):
    recipe = methods.resolve("label_smoothing", {"label_smoothing": alpha})
    assert recipe.label_smoothing() == alpha
    c = 10
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(16, c)).astype(np.float32)
    labels = rng.integers(0, c, 16)
    targets = (1 - alpha) * np.eye(c)[labels] + alpha / c
    reference = -(targets * log_softmax(logits)).sum(axis=-1)

    loss = ClassificationTask(c).loss(recipe.label_smoothing())
    for y in (labels, labels[:, None]):  # Keras may pass [N] or [N, 1] labels
        got = np.asarray(loss(tf.constant(y), tf.constant(logits)))
        np.testing.assert_allclose(np.mean(got), reference.mean(), rtol=1e-5)
        if got.ndim == 1:
            np.testing.assert_allclose(got, reference, rtol=1e-5)
    # Without smoothing: plain cross-entropy, which differs.
    plain = float(ClassificationTask(c).loss(0.0)(tf.constant(labels), tf.constant(logits)))
    np.testing.assert_allclose(plain, -log_softmax(logits)[np.arange(16), labels].mean(), rtol=1e-5)
    assert abs(plain - reference.mean()) > 1e-3


@pytest.mark.parametrize("alpha", [0.1, 0.4])
def test_multilabel_label_smoothing_uses_two_classes_per_label(alpha):
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(16, 3))
    y = rng.integers(0, 2, (16, 3)).astype(np.float64)
    t = (1 - alpha) * y + alpha / 2
    log_p, log_not_p = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
    reference = -(t * log_p + (1 - t) * log_not_p).mean()
    loss = MultiLabelTask(["a", "b", "c"]).loss(alpha)
    got = float(loss(tf.constant(y, tf.float32), tf.constant(logits, tf.float32)))
    np.testing.assert_allclose(got, reference, rtol=1e-5)


def test_label_smoothing_composes():
    assert methods.resolve("label_smoothing+quantization").label_smoothing() == 0.1
    assert methods.resolve("dropout").label_smoothing() == 0.0
    assert methods.resolve("baseline").label_smoothing() == 0.0


# --------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------


class KernelRecorder(keras.callbacks.Callback):
    """Copies every prunable kernel at the beginning of ``epoch`` (before the pruning callback runs)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.kernels = epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.kernels = {l.name: l.kernel.numpy().copy() for l in prunable_layers(self.model)}


def following_bn(model, layer):
    name = layer.name + "_bn"
    return model.get_layer(name) if name in [l.name for l in model.layers] else None


def zero_filters(layer) -> np.ndarray:
    return np.flatnonzero(filter_l1_norms(layer.kernel.numpy()) == 0)


@pytest.fixture(scope="module")
def pruned():
    """Pruning with the defaults (75% of filters at half the epochs), 4-epoch run: epochs 0-2 trained, pruned at 2."""
    epochs, batch, n = 4, 16, 48
    config = make_config("pruning", epochs=epochs)
    steps = n // batch
    model = build(config, steps)
    (callback,) = config.recipe.callbacks(context(epochs, steps))
    assert isinstance(callback, StructuredPruning) and callback.prune_epoch == 2 and callback.ratio == 0.75
    recorder = KernelRecorder(callback.prune_epoch)
    x, y = random_data(n)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=3, callbacks=[recorder, callback], shuffle=False, verbose=0)
    return {"model": model, "callback": callback, "recorded": recorder.kernels, "config": config,
            "x": x, "y": y, "batch": batch, "steps": steps,
            "zeros": {l.name: zero_filters(l) for l in prunable_layers(model)}}


def test_pruning_zeroes_the_75_percent_smallest_filters(pruned):
    model, recorded = pruned["model"], pruned["recorded"]
    layers = prunable_layers(model)
    convs = [l.name for l in model.layers if type(l).__name__ == "Conv2D"]
    assert [l.name for l in layers] == convs  # every conv; the output Dense is kept whole
    for layer in layers:
        n = layer.kernel.shape[-1]
        k = int(round(0.75 * n))
        zeros = zero_filters(layer)
        assert len(zeros) == k, (layer.name, len(zeros), n)
        smallest = np.argsort(filter_l1_norms(recorded[layer.name]), kind="stable")[:k]
        assert set(zeros) == set(smallest), f"{layer.name}: not the smallest-L1 filters"
        kernel = layer.kernel.numpy()
        assert np.all(kernel[..., zeros] == 0)
        kept = np.setdiff1d(np.arange(n), zeros)
        assert np.all(filter_l1_norms(kernel)[kept] > 0)
        # Fine-tuning moved the kept filters after the pruning.
        assert not np.allclose(kernel[..., kept], recorded[layer.name][..., kept])
        bn = following_bn(model, layer)
        assert bn is not None, layer.name
        assert np.all(bn.gamma.numpy()[zeros] == 0) and np.all(bn.beta.numpy()[zeros] == 0), layer.name
        assert np.all(bn.gamma.numpy()[kept] != 0), layer.name


def test_pruned_filters_stay_zero_through_more_fine_tuning(pruned):
    model, callback = pruned["model"], pruned["callback"]
    before = {l.name: l.kernel.numpy().copy() for l in prunable_layers(model)}
    model.fit(pruned["x"], pruned["y"], batch_size=pruned["batch"], initial_epoch=3, epochs=4,
              callbacks=[callback], shuffle=False, verbose=0)
    for layer in prunable_layers(model):
        np.testing.assert_array_equal(zero_filters(layer), pruned["zeros"][layer.name])
        assert not np.array_equal(layer.kernel.numpy(), before[layer.name]), f"{layer.name} did not train"


def test_resume_after_pruning_recomputes_the_same_mask(pruned):
    """A fresh callback on a restarted run (past the pruning epoch) reads the mask back from the zeros."""
    config, steps = pruned["config"], pruned["steps"]
    masks = [m.copy() for _, _, m in pruned["callback"].masks]
    model = build(config, steps, seed=1)  # a new process: new model, checkpoint weights
    model.set_weights(pruned["model"].get_weights())
    (callback,) = config.recipe.callbacks(context(config.epochs, steps))
    callback.set_model(model)
    callback.on_epoch_begin(3)  # BackupAndRestore resumes fit at the epoch after the checkpoint (2)
    assert callback.masks is not None and len(callback.masks) == len(masks)
    for (_, _, got), expected in zip(callback.masks, masks):
        np.testing.assert_array_equal(got, expected)
    # An optimizer step moves every weight; the batch end puts the pruned filters back to zero.
    for layer in prunable_layers(model):
        layer.kernel.assign_add(tf.fill(layer.kernel.shape, 0.01))
        bn = following_bn(model, layer)
        bn.gamma.assign_add(tf.fill(bn.gamma.shape, 0.01))
        bn.beta.assign_add(tf.fill(bn.beta.shape, 0.01))
    callback.on_train_batch_end(0)
    for layer in prunable_layers(model):
        zeros = pruned["zeros"][layer.name]
        np.testing.assert_array_equal(zero_filters(layer), zeros)
        bn = following_bn(model, layer)
        assert np.all(bn.gamma.numpy()[zeros] == 0) and np.all(bn.beta.numpy()[zeros] == 0)


def test_smallest_filters_mask_reference():
    kernel = np.zeros((3, 3, 2, 8), np.float32)
    norms = np.array([5, 1, 7, 3, 8, 2, 6, 4], np.float32)
    kernel[0, 0, 0, :] = norms * np.array([1, -1] * 4)
    np.testing.assert_array_equal(smallest_filters_mask(kernel, 0.75), [0, 0, 1, 0, 1, 0, 0, 0])  # 6 of 8
    np.testing.assert_array_equal(smallest_filters_mask(kernel, 0.5), [1, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(smallest_filters_mask(kernel, 0.99), [0, 0, 0, 0, 1, 0, 0, 0])  # one kept


@pytest.fixture(scope="module")
def unstructured():
    """tfmot pruning at 75% from epoch 1 of 2; the kernels' sparsity recorded at each epoch end."""
    epochs, batch, n = 2, 16, 64
    steps = n // batch
    config = make_config("pruning", {"prune_structure": "unstructured"}, epochs=epochs)
    # A small conv net instead of ResNet20: tfmot's wrappers make tracing slow.
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, name="conv1", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 3, name="conv2")(x)
    outputs = keras.layers.Dense(CLASSES, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = config.recipe.transform_model(keras.Model(inputs, outputs), context(epochs, steps))
    callbacks = config.recipe.callbacks(context(epochs, steps))
    sparsity = {}

    class Spy(keras.callbacks.Callback):  # before the method's callbacks, as EpochEvaluation is in train()
        def on_epoch_end(self, epoch, logs=None):
            # The masks the forward pass applies (kernels are re-masked only in UpdatePruningStep.on_epoch_end).
            sparsity[epoch] = {l.layer.name: float(np.mean(w.numpy() == 0)) for l in self.model.layers
                               for w in l.weights if w.name.endswith("/mask:0")}

    x, y = random_data(n)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[Spy(), *callbacks], shuffle=False, verbose=0)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    final = {l.name: float(np.mean(l.kernel.numpy() == 0)) for l in stripped.layers if hasattr(l, "kernel")}
    return sparsity, final


def test_unstructured_pruning_reaches_the_target_sparsity(unstructured):
    sparsity, final = unstructured
    convs = ["conv1", "conv2"]
    assert set(convs) <= set(sparsity[1]) and set(convs) <= set(final)
    for name in convs:
        assert abs(sparsity[1][name] - 0.75) < 0.02, (name, sparsity[1][name])
        assert abs(final[name] - 0.75) < 0.02, (name, final[name])  # the trained kernels themselves


def test_unstructured_pruning_leaves_the_epoch_before_the_pruning_epoch_dense(unstructured):
    sparsity, _ = unstructured
    assert max(sparsity[0].values()) < 0.05, sparsity[0]


# --------------------------------------------------------------------------------------
# Quantization (the quantizer itself is covered by test_quantization.py)
# --------------------------------------------------------------------------------------


def test_quantization_method_holds_at_most_2_pow_b_minus_1_values_per_channel():
    bits = 2
    model = build(make_config("quantization", {"weight_bits": bits, "activation_bits": bits}))
    found = {}
    for layer in model.layers:
        for kernel, quantizer, _ in getattr(layer, "_weight_vars", []):
            if isinstance(quantizer, WeightQuantizer):
                found[layer.layer.name] = (kernel, quantizer)
    assert set(found) == {l.name for l in build(make_config()).layers if type(l).__name__ in ("Conv2D", "Dense")}
    for name, (kernel, quantizer) in found.items():
        expected_bits = 8 if name in ("stem", "logits") else bits  # first and last layers: first_last_bits
        assert quantizer.num_bits == expected_bits, name
        effective = quantizer(kernel, training=False, weights={}).numpy()
        flat = effective.reshape(-1, effective.shape[-1])
        per_channel = [len(np.unique(flat[:, c])) for c in range(flat.shape[-1])]
        if quantizer.per_channel:
            assert max(per_channel) <= 2 ** expected_bits - 1, (name, per_channel)
        else:
            assert len(np.unique(effective)) <= 2 ** expected_bits - 1, name
        if expected_bits == bits:
            assert len(np.unique(kernel.numpy()[..., 0])) > 2 ** bits - 1  # the float kernel is not on the grid


# --------------------------------------------------------------------------------------
# Early stopping (through train: the best validation epoch is restored)
# --------------------------------------------------------------------------------------


class ScriptedValidationTask(ClassificationTask):
    """Real scores, but the validation accuracy of epoch i is ``script[i]``; records the label smoothing."""

    def __init__(self, num_classes, script):
        super().__init__(num_classes)
        self.script, self.calls, self.smoothing = list(script), 0, []

    def loss(self, label_smoothing=0.0):
        self.smoothing.append(label_smoothing)
        return super().loss(label_smoothing)

    def score(self, logits, labels, prefix, mask=None):
        out = super().score(logits, labels, prefix, mask)
        if prefix == "val_":
            out["val_accuracy"] = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
        return out


SCRIPT = [0.2, 0.6, 0.4, 0.5, 0.9, 0.9]  # best at epoch 1; patience 2 stops after epoch 3


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory, tiny_run_data):
    config = RunConfig(experiment="test", method="early_stopping+label_smoothing", hparams={"patience": 2},
                       model_kwargs={"blocks_per_stage": 1}, train_size=300, epochs=len(SCRIPT),
                       batch_size=64, learning_rate=3e-3, eval_train_size=64, noise_rate=0.4)
    data = tiny_run_data(config)
    data.task = ScriptedValidationTask(data.task.num_classes, SCRIPT)
    run_dir = tmp_path_factory.mktemp("early") / config.run_name
    final = train(config, run_dir, data=data, print_fn=lambda *a, **k: None)
    return {"config": config, "data": data, "run_dir": run_dir, "final": final,
            "history": results.read_csv(run_dir / results.HISTORY)}


def test_early_stopping_stops_after_patience(early_stopped):
    history = early_stopped["history"]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert [r["val_accuracy"] for r in history] == SCRIPT[:4]
    assert early_stopped["final"]["epochs_trained"] == 4


def test_early_stopping_restores_the_best_validation_epoch(early_stopped):
    final, history = early_stopped["final"], early_stopped["history"]
    assert final["selected_epoch"] == 1
    assert results.read_json(early_stopped["run_dir"] / results.FINAL) == final
    best = history[1]
    # The final metrics are recomputed with the restored weights: they equal that epoch's.
    assert final["test_accuracy"] == pytest.approx(best["test_accuracy"], abs=1e-6)
    assert final["final_metrics"]["test_accuracy"] == pytest.approx(best["test_accuracy"], abs=1e-6)
    for key in ("test_loss",):
        if key in best and key in final["final_metrics"]:
            assert final["final_metrics"][key] == pytest.approx(best[key], abs=1e-6)
            assert abs(history[-1][key] - best[key]) > 1e-6  # the last epoch differs: the check means something
    # The saved weights are the best epoch's too.
    model, config, _ = load_trained_model(early_stopped["run_dir"])
    assert config.to_dict() == early_stopped["config"].to_dict()
    data = early_stopped["data"]
    from tfq_noise.callbacks import predict_logits

    logits = predict_logits(model, data.test_images, data.mean, data.std)
    assert float(np.mean(logits.argmax(-1) == data.test_labels)) == pytest.approx(best["test_accuracy"], abs=1e-6)


def test_early_stopping_reports_the_selected_model_only(early_stopped):
    """No statistic averages the epochs early stopping discards; memorization and predictions are the
    selected epoch's."""
    final, best = early_stopped["final"], early_stopped["history"][1]
    assert final["test_accuracy_last5"] is None
    assert final["last_epoch_test_accuracy"] == early_stopped["history"][-1]["test_accuracy"]
    assert final["last_memorized"] == pytest.approx(best["memorized"], abs=1e-9)
    assert final["last_train_noisy_accuracy"] == pytest.approx(best["train_noisy_accuracy"], abs=1e-9)
    predictions = results.read_npz(early_stopped["run_dir"] / results.PREDICTIONS)
    # The saved predictions are the restored (selected) model's: its classes, stored exactly, on every image.
    from tfq_noise.callbacks import predict_logits
    from tfq_noise.train import load_trained_model

    model, _, _ = load_trained_model(early_stopped["run_dir"])
    data = early_stopped["data"]
    classes = predict_logits(model, data.train_images, data.mean, data.std).argmax(-1)
    assert np.mean(predictions["train_probs"].argmax(-1) == classes) > 0.99


def test_early_stopping_composes_with_label_smoothing(early_stopped):
    assert early_stopped["data"].task.smoothing == [0.1]


def test_pruning_with_early_stopping_keeps_a_pruned_model(tmp_path, tiny_run_data):
    """Early stopping may not select an epoch from before the pruning (it would be an unpruned model)."""
    config = RunConfig(experiment="test", method="pruning+early_stopping", model_kwargs={"blocks_per_stage": 1},
                       train_size=300, epochs=2, batch_size=64, eval_train_size=0)
    data = tiny_run_data(config, test_size=100)
    data.task = ScriptedValidationTask(data.task.num_classes, [0.9, 0.5])  # the unpruned epoch 0 looks best
    final = train(config, tmp_path, data=data, print_fn=lambda *a, **k: None)
    assert final["selected_epoch"] == 1  # the pruning epoch, round(0.5 * 2)
    model, _, _ = load_trained_model(tmp_path)
    for layer in prunable_layers(model):
        n = layer.kernel.shape[-1]
        assert len(zero_filters(layer)) == round(0.75 * n), layer.name


def test_best_epoch_keeper_restores_best_weights_and_resumes_its_state(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keeper = BestEpochKeeper(tmp_path, monitor="val_accuracy", patience=2, min_delta=0.05, stop=True)
    keeper.set_model(model)
    keeper.on_train_begin()
    weights = {}
    for epoch, value in enumerate([0.5, 0.7, 0.74, 0.6]):  # 0.74 is not 0.05 better than 0.7
        model.set_weights([np.full((2, 1), epoch, np.float32), np.zeros(1, np.float32)])
        weights[epoch] = model.get_weights()
        model.stop_training = False
        keeper.on_epoch_end(epoch, {"val_accuracy": value})
    assert keeper.state["best_epoch"] == 1 and model.stop_training
    keeper.on_train_end()
    np.testing.assert_array_equal(model.get_weights()[0], weights[1][0])
    resumed = BestEpochKeeper(tmp_path, monitor="val_accuracy", patience=2)
    resumed.set_model(model)
    resumed.on_train_begin()
    assert resumed.state == {"best": 0.7, "best_epoch": 1, "wait": 2, "last_epoch": 3}
    with pytest.raises(KeyError, match="val_accuracy"):
        resumed.on_epoch_end(4, {"accuracy": 1.0})


# --------------------------------------------------------------------------------------
# Invalid hyper-parameters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "nonexistent"}, "unknown method"),
    ({"method": "baseline+dropout"}, "baseline"),
    ({"method": "pruning+quantization"}, "cannot be combined"),
    ({"method": "dropout+dropout"}, "twice"),
    ({"method": "+"}, "empty"),
    ({"method": "dropout", "hparams": {"dropout_rate": 1.0}}, "dropout_rate"),
    ({"method": "dropout", "hparams": {"dropout_rate": -0.1}}, "dropout_rate"),
    ({"method": "dropout", "hparams": {"dropout_rate": "0.1"}}, "dropout_rate must be a number"),
    ({"method": "dropout", "hparams": {"dropout_position": "nowhere"}}, "dropout_position"),
    ({"method": "quantization", "hparams": {"weight_bits": 9}}, "weight_bits"),
    ({"method": "quantization", "hparams": {"activation_bits": 1}}, "activation_bits"),
    ({"method": "quantization", "hparams": {"quantization_scheme": "nope"}}, "quantization_scheme"),
    ({"method": "weight_decay", "hparams": {"weight_decay_type": "l1"}}, "weight_decay_type"),
    ({"method": "weight_decay", "hparams": {"weight_decay": -1.0}}, "weight_decay"),
    ({"method": "label_smoothing", "hparams": {"label_smoothing": 1.0}}, "label_smoothing"),
    ({"method": "pruning", "hparams": {"prune_ratio": 1.0}}, "prune_ratio"),
    ({"method": "pruning", "hparams": {"prune_structure": "channels"}}, "prune_structure"),
    ({"method": "early_stopping", "hparams": {"patience": 0}}, "patience"),
    ({"method": "early_stopping", "hparams": {"patience": 2.5}}, "patience"),
    ({"noise_rate": 1.5}, "noise_rate"),
    ({"noise_rate": -0.1}, "noise_rate"),
    ({"method": "early_stopping", "validation_fraction": 0.0}, "validation_fraction"),
    ({"method": "quantization+early_stopping", "validation_fraction": 0.0}, "validation_fraction"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"experiment": "bad/name"}, "experiment"),
    ({"experiment": "a b"}, "experiment"),
    ({"experiment": ""}, "experiment"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 1.5}, "batch_size"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"validation_labels": "dirty"}, "validation_labels"),
    ({"strategy": "tpu"}, "strategy"),
])
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


@pytest.mark.parametrize("method", [
    "baseline", "quantization+early_stopping", "dropout+weight_decay+label_smoothing", "pruning+early_stopping",
])
def test_valid_combinations_are_accepted(method):
    config = RunConfig(method=method)
    assert config.recipe.name == method
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_validation_fraction_zero_is_fine_without_early_stopping():
    assert RunConfig(method="quantization", validation_fraction=0.0).validation_fraction == 0.0


def test_recipe_hparams_defaults_and_overrides():
    recipe = methods.resolve("quantization+early_stopping", {"weight_bits": 2, "patience": 3})
    assert recipe.hparams["weight_bits"] == 2 and recipe.hparams["patience"] == 3
    assert recipe.hparams["activation_bits"] == 4 and recipe.selects_best_epoch()
    assert not methods.resolve("quantization").selects_best_epoch()
    name = make_config("quantization", {"weight_bits": 2}).run_name
    assert "weight_bits-2" in name and make_config("quantization").run_name != name


# --------------------------------------------------------------------------------------
# Fair settings: weight decay matched to the paper's total shrinkage, pruning criteria
# --------------------------------------------------------------------------------------


def test_paper_total_weight_decay_matches_the_papers_shrinkage():
    """Over the run, exp(-wd·Σlr) equals the paper's exp(-0.01·1e-3·200·352) whatever the schedule's length."""
    from tfq_noise.methods.regularizers import PAPER_LOG_SHRINKAGE
    from tfq_noise.train import learning_rate_sum

    assert PAPER_LOG_SHRINKAGE == pytest.approx(0.704)
    method = methods.METHODS["weight_decay"]
    for schedule, epochs in (("cosine", 20), ("constant", 15)):
        config = make_config("weight_decay", {"decay_rule": "paper_total"}, epochs=epochs, lr_schedule=schedule)
        lr_sum = learning_rate_sum(config, 352)
        ctx = TrainContext(epochs, 352, "unused", "val_accuracy", 0, lr_sum)
        wd = method.effective_weight_decay(config.recipe.hparams, ctx)
        assert wd * lr_sum == pytest.approx(0.704)
        summary = config.recipe.summary(ctx)
        assert summary["weight_decay_effective"] == pytest.approx(wd)
        assert summary["weight_decay_total_shrinkage"] == pytest.approx(1 - np.exp(-0.704))
        assert config.recipe.optimizer(1e-3, ctx).weight_decay == pytest.approx(wd)
    # 20 cosine epochs of 352 steps: Σlr ≈ lr·T/2 = 3.52 (+ lr/2 from the discrete sum), so the per-step
    # coefficient is about 0.2 (20× the paper's 0.01).
    config = make_config("weight_decay", {"decay_rule": "paper_total"}, epochs=20, lr_schedule="cosine")
    assert learning_rate_sum(config, 352) == pytest.approx(3.52 + 0.0005, rel=1e-9)
    # The fixed rule keeps the coefficient as given and still reports its (small) total shrinkage.
    fixed = make_config("weight_decay", epochs=20, lr_schedule="cosine")
    ctx = TrainContext(20, 352, "unused", "val_accuracy", 0, 3.52)
    assert fixed.recipe.summary(ctx)["weight_decay_total_shrinkage"] == pytest.approx(1 - np.exp(-0.0352))
    with pytest.raises(ValueError, match="weight_decay_type=decoupled"):
        make_config("weight_decay", {"decay_rule": "paper_total", "weight_decay_type": "l2"})
    with pytest.raises(ValueError, match="decay_rule"):
        make_config("weight_decay", {"decay_rule": "most"})


def test_filter_scores_by_criterion():
    from tfq_noise.methods.pruning import filter_scores

    kernel = np.zeros((1, 1, 1, 4), np.float32)
    kernel[0, 0, 0] = [4, 3, 2, 1]  # L1 ranks filter 3 last
    gamma = np.array([0.1, -2.0, 0.5, 3.0])  # |gamma| ranks filter 0 last
    np.testing.assert_allclose(filter_scores(kernel, gamma, "l1"), [4, 3, 2, 1])
    np.testing.assert_allclose(filter_scores(kernel, gamma, "bn_gamma"), [0.1, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(filter_scores(kernel, gamma, "gamma_l1"), [0.4, 6.0, 1.0, 3.0])
    np.testing.assert_allclose(filter_scores(kernel, None, "bn_gamma"), [4, 3, 2, 1])  # no BN: L1
    scores = filter_scores(kernel, gamma, "bn_gamma")
    np.testing.assert_array_equal(smallest_filters_mask(kernel, 0.5, scores), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="prune_criterion"):
        filter_scores(kernel, gamma, "l2")


def test_bn_gamma_pruning_removes_the_smallest_gamma_filters():
    epochs, batch, n = 4, 16, 32
    config = make_config("pruning", {"prune_criterion": "bn_gamma"}, epochs=epochs)
    model = build(config, n // batch)
    (callback,) = config.recipe.callbacks(context(epochs, n // batch))
    assert callback.criterion == "bn_gamma"
    rng = np.random.default_rng(0)
    gammas = {}
    for layer in prunable_layers(model):  # BN scales far from the kernels' L1 order
        bn = following_bn(model, layer)
        gammas[layer.name] = rng.uniform(0.1, 2.0, bn.gamma.shape).astype(np.float32)
        bn.gamma.assign(gammas[layer.name])
    callback.set_model(model)
    callback.on_epoch_begin(callback.prune_epoch)
    for layer in prunable_layers(model):
        k = int(round(0.75 * layer.kernel.shape[-1]))
        expected = np.argsort(gammas[layer.name], kind="stable")[:k]
        assert set(zero_filters(layer)) == set(expected), layer.name


def test_prune_epoch_leaves_at_least_as_many_epochs_to_fine_tune():
    hp = methods.resolve("pruning").hparams
    for epochs in (4, 15, 20, 31):
        prune_epoch = methods.METHODS["pruning"].prune_epoch(hp, epochs)
        assert epochs - prune_epoch >= prune_epoch, epochs

"""Tests of the robust losses (GCE, SCE, bootstrapping) and mixup, as methods of the one registry.

Each loss is checked against a numpy computation of the paper's formula, in
its single-label and its per-label (C = 2) multi-label form; mixup's batches
are taken apart again (which two images, which λ) and checked against their
targets. Two short ``train`` runs on a few hundred CIFAR-10 images show that
the hooks work through ``model.fit``.
"""

from __future__ import annotations

import tfq_noise  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf

from tfq_noise import keras, methods, results
from tfq_noise.config import RunConfig
from tfq_noise.methods import mixup, robust_losses
from tfq_noise.methods.robust_losses import SCE_LOG_ZERO
from tfq_noise.tasks import ClassificationTask, MultiLabelTask
from tfq_noise.train import build_run_model, train

SMALL = {"blocks_per_stage": 1, "base_filters": 8}
SHAPE = (8, 8, 3)


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def bce(targets, logits):
    z = np.asarray(logits, np.float64)
    return np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))


def evaluate(loss, y, logits, **kwargs):
    return np.asarray(loss(tf.constant(y), tf.constant(logits, tf.float32), **kwargs), np.float64)


RNG = np.random.default_rng(0)
LOGITS = RNG.normal(scale=2.0, size=(6, 4)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 1, 0])
ML_LOGITS = RNG.normal(scale=2.0, size=(5, 3)).astype(np.float32)
ML_LABELS = RNG.integers(0, 2, (5, 3)).astype(np.float32)


# --------------------------------------------------------------------------------------
# Generalized cross entropy
# --------------------------------------------------------------------------------------


def test_gce_by_hand():
    # logits [2, 0, -1], label 0: p_0 = e^2 / (e^2 + 1 + e^-1) = 0.8438..., L = (1 - p_0^0.7) / 0.7.
    p0 = np.exp(2.0) / (np.exp(2.0) + 1.0 + np.exp(-1.0))
    assert p0 == pytest.approx(0.843795, abs=1e-6)
    loss = robust_losses.generalized_cross_entropy(3, 0.7)
    np.testing.assert_allclose(evaluate(loss, [0], [[2.0, 0.0, -1.0]]), [(1 - p0 ** 0.7) / 0.7], rtol=1e-6)

    p = softmax(LOGITS)[np.arange(len(LABELS)), LABELS]
    loss = robust_losses.generalized_cross_entropy(4, 0.7)
    for y in (LABELS, LABELS[:, None]):  # Keras may pass [N] or [N, 1] labels
        np.testing.assert_allclose(evaluate(loss, y, LOGITS), (1 - p ** 0.7) / 0.7, rtol=1e-5)
    # q = 1: 1 - p_y (MAE up to a factor 2).
    np.testing.assert_allclose(evaluate(robust_losses.generalized_cross_entropy(4, 1.0), LABELS, LOGITS), 1 - p,
                               rtol=1e-5)


def test_gce_tends_to_cross_entropy_as_q_goes_to_0():
    ce = -log_softmax(LOGITS)[np.arange(len(LABELS)), LABELS]
    got = evaluate(robust_losses.generalized_cross_entropy(4, 1e-4), LABELS, LOGITS)
    np.testing.assert_allclose(got, ce, rtol=1e-3)
    assert np.max(np.abs(got - ce) / ce) > 1e-7  # not CE itself: the q-dependent formula
    far = evaluate(robust_losses.generalized_cross_entropy(4, 0.7), LABELS, LOGITS)
    assert np.max(np.abs(far - ce) / ce) > 0.05


# --------------------------------------------------------------------------------------
# Symmetric cross entropy
# --------------------------------------------------------------------------------------


def sce_reference(logits, labels, alpha, beta, log_zero):
    """α·CE + β·RCE from the definition: RCE = -Σ_k p_k log y_k, log 0 replaced by ``log_zero``."""
    p = softmax(logits)
    onehot = np.eye(logits.shape[-1])[labels]
    log_label = np.where(onehot > 0, 0.0, log_zero)
    ce = -(onehot * log_softmax(logits)).sum(-1)
    rce = -(p * log_label).sum(-1)
    return alpha * ce + beta * rce


def test_sce_by_hand():
    # logits [2, 0, -1], label 0: CE = -log p_0; RCE = -A (p_1 + p_2) = 4 (1 - p_0).
    p = softmax([[2.0, 0.0, -1.0]])[0]
    expected = 0.1 * -np.log(p[0]) + 1.0 * 4.0 * (p[1] + p[2])
    loss = robust_losses.symmetric_cross_entropy(3, 0.1, 1.0)
    np.testing.assert_allclose(evaluate(loss, [0], [[2.0, 0.0, -1.0]]), [expected], rtol=1e-6)
    assert SCE_LOG_ZERO == -4.0
    for alpha, beta in ((0.1, 1.0), (1.0, 0.5), (0.0, 1.0)):
        loss = robust_losses.symmetric_cross_entropy(4, alpha, beta)
        np.testing.assert_allclose(evaluate(loss, LABELS, LOGITS), sce_reference(LOGITS, LABELS, alpha, beta, -4.0),
                                   rtol=1e-5)


def test_sce_with_the_released_codes_clipping_is_a_rescaled_beta():
    """Clipping the one-hot label at 1e-4 with a natural log is A = ln 1e-4; only β·A matters."""
    p = softmax(LOGITS)
    clipped = np.clip(np.eye(4)[LABELS], 1e-4, 1.0)
    code = 0.1 * -log_softmax(LOGITS)[np.arange(6), LABELS] + 1.0 * -(p * np.log(clipped)).sum(-1)
    rescaled = robust_losses.symmetric_cross_entropy(4, 0.1, np.log(1e4) / 4.0)
    np.testing.assert_allclose(evaluate(rescaled, LABELS, LOGITS), code, rtol=1e-5)


# --------------------------------------------------------------------------------------
# Bootstrapping
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, beta", [("soft", 0.95), ("hard", 0.8), ("soft", 0.5)])
def test_bootstrapping_targets_by_hand(kind, beta):
    p = softmax(LOGITS)
    own = p if kind == "soft" else np.eye(4)[p.argmax(-1)]
    target = beta * np.eye(4)[LABELS] + (1 - beta) * own
    expected = -(target * log_softmax(LOGITS)).sum(-1)
    loss = robust_losses.bootstrapping(4, beta, kind)
    np.testing.assert_allclose(evaluate(loss, LABELS, LOGITS), expected, rtol=1e-5)
    # The prediction in the target is a constant: the gradient is that of CE against a fixed target, p - target.
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss(tf.constant(LABELS), logits))
    np.testing.assert_allclose(tape.gradient(value, logits).numpy(), p - target, atol=1e-5)


def test_bootstrapping_by_hand_on_one_example():
    # logits [2, 0, -1], label 1 (a wrong label the model disagrees with).
    p = softmax([[2.0, 0.0, -1.0]])[0]
    soft = -((0.95 * np.array([0, 1, 0]) + 0.05 * p) * np.log(p)).sum()
    hard = -((0.8 * np.array([0, 1, 0]) + 0.2 * np.array([1, 0, 0])) * np.log(p)).sum()
    np.testing.assert_allclose(evaluate(robust_losses.bootstrapping(3, 0.95, "soft"), [1], [[2.0, 0.0, -1.0]]),
                               [soft], rtol=1e-6)
    np.testing.assert_allclose(evaluate(robust_losses.bootstrapping(3, 0.8, "hard"), [1], [[2.0, 0.0, -1.0]]),
                               [hard], rtol=1e-6)


# --------------------------------------------------------------------------------------
# Multi-label forms (per label, C = 2) and shared properties
# --------------------------------------------------------------------------------------


def test_multilabel_forms_by_hand():
    z, y = ML_LOGITS.astype(np.float64), ML_LABELS.astype(np.float64)
    s = sigmoid(z)
    p_label = np.where(y > 0, s, 1 - s)  # probability of the given label (present or absent)
    checks = {
        "gce": (robust_losses.generalized_cross_entropy(3, 0.7, multilabel=True), (1 - p_label ** 0.7) / 0.7),
        "sce": (robust_losses.symmetric_cross_entropy(3, 0.1, 1.0, multilabel=True),
                0.1 * bce(y, z) + 4.0 * (1 - p_label)),
        "soft": (robust_losses.bootstrapping(3, 0.95, "soft", multilabel=True), bce(0.95 * y + 0.05 * s, z)),
        "hard": (robust_losses.bootstrapping(3, 0.8, "hard", multilabel=True), bce(0.8 * y + 0.2 * (z > 0), z)),
    }
    for name, (loss, expected) in checks.items():
        got = evaluate(loss, ML_LABELS, ML_LOGITS)
        assert got.shape == ML_LABELS.shape, name  # per entry, so [B, K] sample weights apply
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=name)
    # Soft bootstrapping per label: the gradient treats σ(z) in the target as a constant.
    logits = tf.Variable(ML_LOGITS)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(checks["soft"][0](tf.constant(ML_LABELS), logits))
    np.testing.assert_allclose(tape.gradient(value, logits).numpy(), s - (0.95 * y + 0.05 * s), atol=1e-5)


def all_losses(multilabel=False, soft_targets=False):
    c = 3 if multilabel else 4
    return {
        "gce": robust_losses.generalized_cross_entropy(c, 0.7, multilabel, soft_targets),
        "sce": robust_losses.symmetric_cross_entropy(c, 0.1, 1.0, multilabel, soft_targets),
        "soft": robust_losses.bootstrapping(c, 0.95, "soft", multilabel, soft_targets),
        "hard": robust_losses.bootstrapping(c, 0.8, "hard", multilabel, soft_targets),
    }


@pytest.mark.parametrize("multilabel", [False, True])
def test_gradients_are_finite_even_for_extreme_logits(multilabel):
    # Confidently wrong (GCE's gradient vanishes there: p_y^q underflows, by design) and moderate rows.
    if multilabel:
        logits = np.array([[80.0, -80.0, 0.0], [-200.0, 200.0, 1e-3], [0.5, -0.3, 0.1]], np.float32)
        labels = np.array([[0, 1, 1], [1, 0, 0], [1, 0, 1]], np.float32)
    else:
        logits = np.array([[80.0, -80.0, 0.0, 1.0], [-200.0, 200.0, 0.0, 0.0], [0.5, -0.3, 0.1, 0.0]], np.float32)
        labels = np.array([1, 0, 2])
    for name, loss in all_losses(multilabel).items():
        variable = tf.Variable(logits)
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss(tf.constant(labels), variable))
        gradient = tape.gradient(value, variable).numpy()
        assert np.isfinite(value.numpy()) and np.all(np.isfinite(gradient)), name
        assert np.any(gradient != 0), name


def test_bfloat16_logits_are_computed_in_float32():
    logits16 = tf.constant(LOGITS, tf.bfloat16)
    exact = tf.cast(logits16, tf.float32)  # the same values, in float32
    for name, loss in all_losses().items():
        got = loss(tf.constant(LABELS), logits16)
        assert got.dtype == tf.float32, name
        np.testing.assert_allclose(got.numpy(), loss(tf.constant(LABELS), exact).numpy(), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("multilabel", [False, True])
def test_mixed_targets_give_the_mixed_loss(multilabel):
    """Every loss is linear in its target: L(λ·y_i + (1 − λ)·y_j) = λ·L(y_i) + (1 − λ)·L(y_j), mixup's loss."""
    lam = 0.3
    if multilabel:
        logits, y_i = ML_LOGITS, ML_LABELS
        y_j = 1 - ML_LABELS
        sparse_i, sparse_j, soft = y_i, y_j, lam * y_i + (1 - lam) * y_j
    else:
        logits, sparse_i = LOGITS, LABELS
        sparse_j = (LABELS + 1) % 4
        soft = lam * np.eye(4)[sparse_i] + (1 - lam) * np.eye(4)[sparse_j]
    hard_targets, soft_targets = all_losses(multilabel), all_losses(multilabel, soft_targets=True)
    for name in hard_targets:
        expected = (lam * evaluate(hard_targets[name], sparse_i, logits)
                    + (1 - lam) * evaluate(hard_targets[name], sparse_j, logits))
        got = evaluate(soft_targets[name], soft.astype(np.float32), logits)
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=name)
        if not multilabel:  # a one-hot distribution is the class id
            np.testing.assert_allclose(evaluate(soft_targets[name], np.eye(4, dtype=np.float32)[sparse_i], logits),
                                       evaluate(hard_targets[name], sparse_i, logits), rtol=1e-6, err_msg=name)


# --------------------------------------------------------------------------------------
# Mixup
# --------------------------------------------------------------------------------------


def unmix(batch_images, mixed):
    """For each mixed image, (partner j, λ) with mixed_i = λ·x_i + (1 − λ)·x_j; j = i, λ = 1 if it is x_i."""
    x = batch_images.reshape(len(batch_images), -1).astype(np.float64)
    m = mixed.reshape(len(mixed), -1).astype(np.float64)
    out = []
    for i in range(len(x)):
        if np.max(np.abs(m[i] - x[i])) < 1e-5:
            out.append((i, 1.0))
            continue
        best = None
        for j in range(len(x)):
            if j == i:
                continue
            d = x[i] - x[j]
            lam = float(np.dot(m[i] - x[j], d) / np.dot(d, d))
            residual = np.max(np.abs(lam * x[i] + (1 - lam) * x[j] - m[i]))
            if best is None or residual < best[2]:
                best = (j, lam, residual)
        assert best[2] < 1e-4, f"image {i} is no mix of two images of its batch"
        out.append(best[:2])
    return out


def images_dataset(n, batch, labels, weights=None, shape=(4, 4, 3), seed=0):
    images = np.random.default_rng(seed).random((n,) + shape).astype(np.float32)  # all distinct
    tensors = (images, labels) if weights is None else (images, labels, weights)
    return images, tf.data.Dataset.from_tensor_slices(tensors).batch(batch)


def test_mixup_mixes_pairs_of_the_batch_with_the_targets_lambda():
    n, batch, classes = 96, 8, 10
    labels = np.random.default_rng(1).integers(0, classes, n)
    images, dataset = images_dataset(n, batch, labels)
    recipe = methods.resolve("mixup")
    assert recipe.soft_targets() and recipe.hparams["mixup_alpha"] == 1.0
    mixed = recipe.transform_dataset(dataset, classes, False, seed=3)
    lambdas = []
    for b, (x, t) in enumerate(mixed):
        x, t = x.numpy(), t.numpy()
        assert t.shape == (batch, classes)
        np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-6)
        start = b * batch
        pairs = unmix(images[start:start + batch], x)
        lam = [l for i, (j, l) in enumerate(pairs) if j != i]
        if not lam:  # every example drew itself: nothing to see in this batch
            continue
        np.testing.assert_allclose(lam, lam[0], atol=1e-4)  # one λ per batch
        assert 0.0 <= lam[0] <= 1.0
        lambdas.append(lam[0])
        partners = [i if j == i else j for i, (j, _) in enumerate(pairs)]
        if 1e-3 < lam[0] < 1 - 1e-3:
            assert sorted(partners) == list(range(batch))  # a permutation of the batch
        y = labels[start:start + batch]
        for i, j in enumerate(partners):
            expected = lam[0] * np.eye(classes)[y[i]] + (1 - lam[0]) * np.eye(classes)[y[j]]
            np.testing.assert_allclose(t[i], expected, atol=1e-4)
    assert len(lambdas) >= 10
    # The same seed gives the same batches; the next epoch draws new ones.
    first = [x.numpy() for x, _ in recipe.transform_dataset(dataset, classes, False, seed=3)]
    again = [x.numpy() for x, _ in recipe.transform_dataset(dataset, classes, False, seed=3)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    second_epoch = [x.numpy() for x, _ in mixed]
    assert not np.allclose(np.concatenate(first), np.concatenate(second_epoch))


def batch_lambdas(alpha, batches=400, batch=4, seed=0):
    n = batches * batch
    images, dataset = images_dataset(n, batch, np.zeros(n, np.int64), shape=(2, 2, 1), seed=seed)
    lambdas = []
    for b, (x, _) in enumerate(mixup.mixup_dataset(dataset, alpha, 2, False, seed)):
        pairs = unmix(images[b * batch:(b + 1) * batch], x.numpy())
        moved = [l for i, (j, l) in enumerate(pairs) if j != i]
        if moved:
            lambdas.append(moved[0])
    return np.array(lambdas)


@pytest.mark.parametrize("alpha", [1.0, 0.2])
def test_mixup_lambda_follows_beta_alpha_alpha(alpha):
    lambdas = batch_lambdas(alpha)
    assert len(lambdas) > 350
    mean, variance = 0.5, 1.0 / (4 * (2 * alpha + 1))  # Beta(α, α)
    standard_error = np.sqrt(variance / len(lambdas))
    assert abs(lambdas.mean() - mean) < 4 * standard_error, lambdas.mean()
    assert abs(lambdas.var() - variance) < 0.25 * variance, (lambdas.var(), variance)


def test_mixup_mixes_multilabel_targets_and_their_weights():
    n, batch, k = 48, 6, 3
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (n, k)).astype(np.float32)
    weights = (rng.random((n, k)) > 0.3).astype(np.float32)  # a known-label mask
    images, dataset = images_dataset(n, batch, labels, weights)
    logits = rng.normal(size=(batch, k))
    checked = 0
    for b, (x, t, w) in enumerate(mixup.mixup_dataset(dataset, 1.0, k, True, seed=5)):
        x, t, w = x.numpy(), t.numpy(), w.numpy()
        start = b * batch
        y, v = labels[start:start + batch], weights[start:start + batch]
        pairs = unmix(images[start:start + batch], x)
        lam = [l for i, (j, l) in enumerate(pairs) if j != i]
        if not lam:
            continue
        lam = lam[0]
        partners = [i if j == i else j for i, (j, _) in enumerate(pairs)]
        for i, j in enumerate(partners):
            total = lam * v[i] + (1 - lam) * v[j]
            np.testing.assert_allclose(w[i], total, atol=1e-5)
            plain = lam * y[i] + (1 - lam) * y[j]
            weighted = np.where(total > 0, (lam * v[i] * y[i] + (1 - lam) * v[j] * y[j]) / np.maximum(total, 1e-12),
                                plain)
            np.testing.assert_allclose(t[i], weighted, atol=1e-5)
            # The weighted loss of the mixed entry is the mix of the two weighted losses.
            np.testing.assert_allclose(total * bce(weighted, logits[i]),
                                       lam * v[i] * bce(y[i], logits[i]) + (1 - lam) * v[j] * bce(y[j], logits[i]),
                                       atol=1e-5)
            checked += 1
        assert np.all((t >= 0) & (t <= 1))
    assert checked > 20
    # Without weights: the binary targets are mixed with the images' λ.
    images, dataset = images_dataset(n, batch, labels)
    for b, (x, t) in enumerate(mixup.mixup_dataset(dataset, 1.0, k, True, seed=5)):
        pairs = unmix(images[b * batch:(b + 1) * batch], x.numpy())
        y = labels[b * batch:(b + 1) * batch]
        for i, (j, lam) in enumerate(pairs):
            np.testing.assert_allclose(t.numpy()[i], lam * y[i] + (1 - lam) * y[j], atol=1e-4)


def test_mixup_with_per_example_weights():
    n, batch, classes = 24, 6, 5
    labels = np.arange(n) % classes
    weights = np.where(np.arange(n) % 3 == 0, 0.0, 2.0).astype(np.float32)
    images, dataset = images_dataset(n, batch, labels, weights)
    for b, (x, t, w) in enumerate(mixup.mixup_dataset(dataset, 1.0, classes, False, seed=1)):
        y, v = labels[b * batch:(b + 1) * batch], weights[b * batch:(b + 1) * batch]
        for i, (j, lam) in enumerate(unmix(images[b * batch:(b + 1) * batch], x.numpy())):
            total = lam * v[i] + (1 - lam) * v[j]
            assert w.numpy()[i] == pytest.approx(total, abs=1e-5)
            if total > 0:
                expected = (lam * v[i] * np.eye(classes)[y[i]] + (1 - lam) * v[j] * np.eye(classes)[y[j]]) / total
                np.testing.assert_allclose(t.numpy()[i], expected, atol=1e-5)
        np.testing.assert_allclose(t.numpy().sum(-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------
# The registry: composition, refusals, run names, the recipe's loss
# --------------------------------------------------------------------------------------


def test_recipe_picks_the_methods_loss():
    task = ClassificationTask(4)
    assert methods.resolve("gce").loss(task).__name__ == "generalized_cross_entropy"
    assert methods.resolve("sce+early_stopping").loss(task).__name__ == "symmetric_cross_entropy"
    assert methods.resolve("bootstrap", {"bootstrap_type": "hard"}).loss(task).__name__ == "hard_bootstrapping"
    # Methods without a loss keep the task's, as before.
    assert isinstance(methods.resolve("quantization").loss(task), keras.losses.SparseCategoricalCrossentropy)
    assert methods.resolve("label_smoothing").loss(task).__name__ == "smoothed_sparse_categorical_crossentropy"
    assert [type(m).__name__ for m in methods.resolve("dropout").fit_metrics(task)] == ["SparseCategoricalAccuracy"]
    # Mixup: cross-entropy against the mixed targets (smoothed with label_smoothing), accuracy against argmax.
    loss = methods.resolve("mixup+label_smoothing").loss(task)
    targets = (0.3 * np.eye(4)[LABELS] + 0.7 * np.eye(4)[(LABELS + 1) % 4]).astype(np.float32)
    smoothed = 0.9 * targets + 0.1 / 4
    np.testing.assert_allclose(evaluate(loss, targets, LOGITS), -(smoothed * log_softmax(LOGITS)).sum(-1), rtol=1e-5)
    assert [type(m).__name__ for m in methods.resolve("mixup").fit_metrics(task)] == ["CategoricalAccuracy"]
    # Mixup with a robust loss: that loss, reading soft targets.
    np.testing.assert_allclose(evaluate(methods.resolve("mixup+gce").loss(task), targets, LOGITS),
                               evaluate(robust_losses.generalized_cross_entropy(4, 0.7, soft_targets=True),
                                        targets, LOGITS))
    multilabel = MultiLabelTask(["a", "b", "c"])
    loss = methods.resolve("sce").loss(multilabel)
    assert evaluate(loss, ML_LABELS, ML_LOGITS).shape == ML_LABELS.shape


def test_soft_target_fit_accuracy_for_multilabel_tasks():
    task = MultiLabelTask(["a", "b"], threshold=0.5)
    (metric,) = methods.resolve("mixup").fit_metrics(task)
    metric.update_state(tf.constant([[0.7, 0.2], [0.4, 1.0]]), tf.constant([[1.0, -1.0], [2.0, 3.0]]))
    assert float(metric.result()) == pytest.approx(0.75)  # (1, 1, 0, 1): row 1's first target is "absent"


def test_gce_plus_quantization_resolves_builds_and_trains():
    config = RunConfig(experiment="test", method="gce+quantization", model_kwargs=SMALL)
    recipe = config.recipe
    assert recipe.name == "gce+quantization" and recipe.hparams["gce_q"] == 0.7
    assert recipe.hparams["weight_bits"] == 4
    keras.utils.set_random_seed(0)
    model = build_run_model(config, SHAPE, 4)
    assert any("quant" in type(layer).__name__.lower() for layer in model.layers)  # the tfmot wrappers
    task = ClassificationTask(4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=recipe.loss(task), metrics=recipe.fit_metrics(task))
    x = np.random.default_rng(0).normal(size=(16,) + SHAPE).astype(np.float32)
    y = np.arange(16) % 4
    loss, _ = model.train_on_batch(x, y)
    assert np.isfinite(loss) and 0 < loss <= 1 / 0.7  # GCE is bounded by 1/q
    assert methods.resolve("mixup+quantization").soft_targets()


@pytest.mark.parametrize("method, message", [
    ("gce+sce", "each replace the training loss"),
    ("sce+bootstrap", "each replace the training loss"),
    ("gce+sce+bootstrap", "each replace the training loss"),
    ("label_smoothing+gce", "label_smoothing smooths"),
    ("bootstrap+label_smoothing", "label_smoothing smooths"),
    ("baseline+mixup", "baseline"),
    ("mixup+mixup", "twice"),
])
def test_combinations_that_make_no_sense_are_refused(method, message):
    with pytest.raises(ValueError, match=message):
        methods.resolve(method)
    with pytest.raises(ValueError, match=message):
        RunConfig(method=method)


@pytest.mark.parametrize("method, hparams, message", [
    ("gce", {"gce_qq": 0.5}, "unknown hyper-parameter"),
    ("mixup", {"alpha": 1.0}, "unknown hyper-parameter"),
    ("gce", {"gce_q": 0.0}, "gce_q"),
    ("gce", {"gce_q": 1.5}, "gce_q"),
    ("sce", {"sce_alpha": -0.1}, "sce_alpha"),
    ("sce", {"sce_alpha": 0.0, "sce_beta": 0.0}, "both be 0"),
    ("bootstrap", {"bootstrap_type": "medium"}, "bootstrap_type"),
    ("bootstrap", {"bootstrap_beta": 1.5}, "bootstrap_beta"),
    ("mixup", {"mixup_alpha": 0.0}, "mixup_alpha"),
    ("mixup", {"mixup_alpha": "1"}, "mixup_alpha must be a number"),
])
def test_bad_hyper_parameters_are_refused(method, hparams, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(method=method, hparams=hparams)


def test_valid_combinations_and_run_names():
    for method in ("gce+quantization", "mixup+quantization", "mixup+gce", "mixup+label_smoothing",
                   "sce+early_stopping", "bootstrap+dropout", "mixup+bootstrap+quantization+early_stopping"):
        assert RunConfig(method=method).recipe.name == method
    assert RunConfig(method="gce").run_name == "symmetric-0.00__gce__seed0"
    assert RunConfig(method="gce+quantization", noise_rate=0.4).run_name == "symmetric-0.40__gce-quantization__seed0"
    assert (RunConfig(method="bootstrap", hparams={"bootstrap_type": "hard"}).run_name
            == "symmetric-0.00__bootstrap_bootstrap_type-hard__seed0")
    assert (RunConfig(method="mixup", hparams={"mixup_alpha": 0.2}).run_name
            == "symmetric-0.00__mixup_mixup_alpha-0.2__seed0")
    # Existing methods keep their names; another method's keys are still ignored (one grid, shared values).
    assert (RunConfig(method="quantization", hparams={"weight_bits": 2, "gce_q": 0.5}).run_name
            == "symmetric-0.00__quantization_weight_bits-2__seed0")
    assert RunConfig(method="label_smoothing+early_stopping").run_name == \
        "symmetric-0.00__label_smoothing-early_stopping__seed0"


def test_bootstrap_beta_defaults_to_the_papers_value_for_its_type():
    method = methods.METHODS["bootstrap"]
    soft, hard = methods.resolve("bootstrap"), methods.resolve("bootstrap", {"bootstrap_type": "hard"})
    assert soft.hparams["bootstrap_beta"] is None and method.beta(soft.hparams) == 0.95
    assert method.beta(hard.hparams) == 0.8
    assert method.beta(methods.resolve("bootstrap", {"bootstrap_beta": 0.6}).hparams) == 0.6
    assert hard.summary(None) == {"bootstrap_beta_effective": 0.8}
    config = RunConfig(method="bootstrap")
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


# --------------------------------------------------------------------------------------
# End to end: train() with each hook
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mixup", "gce"])
def test_train_end_to_end(method, tmp_path, tiny_run_data):
    config = RunConfig(experiment="test", method=method, model_kwargs={"blocks_per_stage": 1}, train_size=300,
                       epochs=2, batch_size=64, eval_train_size=64, noise_rate=0.4)
    data = tiny_run_data(config, test_size=100)
    final = train(config, tmp_path, data=data, print_fn=lambda *a, **k: None)
    history = results.read_csv(tmp_path / results.HISTORY)
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(np.isfinite(row["loss"]) and 0 <= row["accuracy"] <= 1 for row in history)
    if method == "gce":
        assert all(0 < row["loss"] <= 1 / 0.7 for row in history)  # bounded: the GCE, not the cross-entropy
    assert results.read_json(tmp_path / results.FINAL) == final
    assert final["method"] == method and final["epochs_trained"] == 2
    assert final["hparams"] == dict(methods.default_hparams(method))
    assert 0 <= final["test_accuracy"] <= 1 and final["last_memorized"] is not None
    predictions = results.read_npz(tmp_path / results.PREDICTIONS)
    assert predictions["train_probs"].shape == (len(data.train_images), 10)
    assert predictions["val_probs"].shape == (len(predictions["val_labels"]), 10)
    np.testing.assert_allclose(predictions["val_probs"].astype(np.float64).sum(-1), 1.0, atol=2e-2)

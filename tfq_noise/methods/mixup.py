"""mixup (Zhang et al., ICLR 2018): train on convex combinations of pairs of examples and of their targets.

Each training batch is replaced by ``λ·x + (1 − λ)·x[π]`` with targets
``λ·y + (1 − λ)·y[π]``: one λ ~ Beta(α, α) per batch and π a random permutation
of the batch, as in the authors' CIFAR-10 code. Class ids become one-hot
targets first; multi-label targets are mixed as they are. The mixing acts on
the batched, normalized pipeline (normalization is affine, so this equals
mixing the raw images), after augmentation.

Sample weights (BP4D's known-label mask) are mixed too: the batch element gets
weight ``W = λ·w + (1 − λ)·w[π]`` and target ``(λ·w·y + (1 − λ)·w[π]·y[π]) / W``,
so that its loss ``W·L(target)`` equals ``λ·w·L(y) + (1 − λ)·w[π]·L(y[π])`` for any
loss linear in the target (cross-entropy, GCE, SCE as written in
:mod:`tfq_noise.methods.robust_losses`).

Randomness is stateless and seeded: one fresh seed per batch, a different
draw every epoch, the same sequence on every run with the same seed.
"""

from __future__ import annotations

import tensorflow as tf

from tfq_noise.methods.base import Method, _check_range

# The mixup paper's CIFAR-10 value (and its released code's default): λ uniform on [0, 1].
PAPER_ALPHA = 1.0
# Second word of the per-batch stateless seed (augmentation uses 0), so mixup draws differ from it.
_SEED_STREAM = 1


def sample_lambda(alpha: float, seed) -> tf.Tensor:
    """One λ ~ Beta(α, α) (float32 scalar) from a stateless seed of shape [2], as G₁ / (G₁ + G₂), G ~ Gamma(α)."""
    gammas = tf.random.stateless_gamma([2], seed=seed, alpha=tf.constant(alpha, tf.float64), dtype=tf.float64)
    total = gammas[0] + gammas[1]
    # Both draws underflow to 0 only for a tiny α, where λ is 0 or 1 almost surely: take either.
    lam = tf.where(total > 0, gammas[0] / tf.where(total > 0, total, 1.0), tf.constant(1.0, tf.float64))
    return tf.cast(lam, tf.float32)


def mix_batch(images, targets, lam, partner, weights=None):
    """``λ·a + (1 − λ)·a[partner]`` for the images and targets (and weights, see the module's notes).

    Args:
      images: float [B, ...].
      targets: float [B, C] target distributions or [B, K] multi-label targets.
      lam: float32 scalar.
      partner: int [B], the index of each example's partner in the batch.
      weights: optional float [B] or [B, K] sample weights.

    Returns:
      ``(images, targets)`` or ``(images, targets, weights)``, mixed.
    """
    images = tf.convert_to_tensor(images)
    targets = tf.cast(targets, tf.float32)
    lam_images = tf.cast(lam, images.dtype)
    mixed_images = lam_images * images + (1.0 - lam_images) * tf.gather(images, partner)
    if weights is None:
        return mixed_images, lam * targets + (1.0 - lam) * tf.gather(targets, partner)
    weights = tf.cast(weights, tf.float32)
    mixed_weights = lam * weights + (1.0 - lam) * tf.gather(weights, partner)
    w, total = weights, mixed_weights
    if weights.shape.rank < targets.shape.rank:  # one weight per example [B] against targets [B, C]
        w, total = weights[:, None], mixed_weights[:, None]
    weighted = lam * w * targets + (1.0 - lam) * tf.gather(w, partner) * tf.gather(targets, partner)
    plain = lam * targets + (1.0 - lam) * tf.gather(targets, partner)
    mixed_targets = tf.where(total > 0, weighted / tf.where(total > 0, total, 1.0), plain)
    return mixed_images, mixed_targets, mixed_weights


def mixup_dataset(dataset: tf.data.Dataset, alpha: float, num_classes: int, multilabel: bool,
                  seed: int) -> tf.data.Dataset:
    """Mixes every batch of ``dataset`` (elements ``(images, labels[, sample_weights])``).

    Integer class ids [B] become one-hot targets [B, num_classes] before mixing;
    multi-label targets [B, K] are mixed as they are.
    """
    batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def mix(batch, s):
        images, labels, *rest = batch
        if multilabel:
            targets = tf.cast(labels, tf.float32)
        else:
            targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes, dtype=tf.float32)
        seeds = tf.random.experimental.stateless_split(tf.stack([s, tf.constant(_SEED_STREAM, tf.int64)]), num=2)
        lam = sample_lambda(alpha, seeds[0])
        partner = tf.argsort(tf.random.stateless_uniform(tf.shape(images)[:1], seeds[1]))
        return mix_batch(images, targets, lam, partner, rest[0] if rest else None)

    return tf.data.Dataset.zip((dataset, batch_seeds)).map(
        mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


class Mixup(Method):
    """mixup with λ ~ Beta(α, α), one λ and one random pairing per batch.

    Rule for α: ``mixup_alpha`` = 1.0, the value the mixup paper uses for CIFAR-10 (and its released
    code's default); it is not tuned, least of all on the test set. The paper's corrupted-label
    experiment compares several α; ours keeps the one value for every noise rate and dataset.
    Composes with a robust loss (gce, sce, bootstrap: their losses take the mixed targets) and with
    label smoothing (which smooths the mixed targets).
    """

    name = "mixup"
    defaults = {"mixup_alpha": PAPER_ALPHA}
    description = "convex combinations of pairs of training examples, λ ~ Beta(α, α)"

    def check(self, hp):
        _check_range(hp, "mixup_alpha", 0.0, 1e3, low_open=True)

    def soft_targets(self, hp):
        return True

    def transform_dataset(self, hp, dataset, num_classes, multilabel, seed):
        return mixup_dataset(dataset, float(hp["mixup_alpha"]), num_classes, multilabel, seed)

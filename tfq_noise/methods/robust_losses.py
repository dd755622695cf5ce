"""Losses robust to noisy labels: generalized and symmetric cross entropy, bootstrapping.

Every loss is a Keras loss function of ``(y_true, logits)``:

- single-label classification: logits [B, C] and class ids [B] (or [B, 1]), or,
  with ``soft_targets=True``, target distributions [B, C] (mixup's mixed
  one-hot targets); one value per example [B];
- multi-label tasks: one logit per label [B, K] and float targets [B, K]; each
  label is a two-class problem (absent, present), C = 2; one value per label
  entry [B, K], so that Keras can apply per-label sample weights (BP4D's
  known-label mask) and, unweighted, averages over all B·K entries as
  ``BinaryCrossentropy`` does.

Each loss is written as ``Σ_k t_k · ℓ_k(p)`` for a target distribution ``t``:
for a one-hot target it is the paper's loss of the labelled class; for a mixed
target ``λ·y_i + (1 − λ)·y_j`` it is ``λ·L(y_i) + (1 − λ)·L(y_j)``, the mixup
paper's loss. Logits are cast to float32 (they may be bfloat16 under
``--precision=mixed_bfloat16``).
"""

from __future__ import annotations

import tensorflow as tf

from tfq_noise.methods.base import Method, _check_range

# Symmetric cross entropy: the reverse cross-entropy needs log 0, which the paper (Wang et al. 2019) sets to
# A = -4. Its released code instead clips the one-hot label at 1e-4 and takes the natural log, i.e.
# A = ln 1e-4 ≈ -9.21. For a one-hot label RCE = -A·(1 - p_y), so only β·|A| matters: sce_beta = 2.3026
# with A = -4 is the released code's loss.
SCE_LOG_ZERO = -4.0

# Reed et al. (2015): β = 0.95 for soft bootstrapping, 0.8 for hard bootstrapping.
BOOTSTRAP_PAPER_BETA = {"soft": 0.95, "hard": 0.8}
BOOTSTRAP_TYPES = tuple(BOOTSTRAP_PAPER_BETA)


def _targets_and_log_probs(y_true, logits, num_classes: int, multilabel: bool, soft_targets: bool):
    """Float32 target distributions and log-probabilities with classes on the last axis.

    Single-label: [B, C] each. Multi-label: [B, K, 2] each, class 1 meaning "present".
    """
    logits = tf.cast(logits, tf.float32)
    if multilabel:
        present = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(logits))
        targets = tf.stack([1.0 - present, present], axis=-1)
        log_probs = tf.stack([tf.math.log_sigmoid(-logits), tf.math.log_sigmoid(logits)], axis=-1)
        return targets, log_probs
    if soft_targets:
        targets = tf.reshape(tf.cast(y_true, tf.float32), [-1, num_classes])
    else:
        targets = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes, dtype=tf.float32)
    return targets, tf.nn.log_softmax(logits, axis=-1)


def generalized_cross_entropy(num_classes: int, q: float = 0.7, multilabel: bool = False,
                              soft_targets: bool = False):
    """Zhang & Sabuncu (2018): L_q = (1 − p_y^q) / q, from cross-entropy (q → 0) to MAE (q = 1).

    Computed as −expm1(q·log p_y) / q, exact for small q.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q!r}")

    def loss(y_true, logits):
        targets, log_probs = _targets_and_log_probs(y_true, logits, num_classes, multilabel, soft_targets)
        per_class = -tf.math.expm1(q * log_probs) / q
        return tf.reduce_sum(targets * per_class, axis=-1)

    loss.__name__ = "generalized_cross_entropy"
    return loss


def symmetric_cross_entropy(num_classes: int, alpha: float = 0.1, beta: float = 1.0, multilabel: bool = False,
                            soft_targets: bool = False, log_zero: float = SCE_LOG_ZERO):
    """Wang et al. (2019): α·CE + β·RCE, RCE = −Σ_k p_k log y_k with log 0 = A (``log_zero``).

    For a one-hot label y, RCE = −A·Σ_{k≠y} p_k = −A·(1 − p_y); a target distribution t gives
    −A·Σ_k t_k (1 − p_k). CE is computed from log-softmax (no clipping of p).
    """
    if log_zero >= 0:
        raise ValueError(f"log_zero must be negative, got {log_zero!r}")

    def loss(y_true, logits):
        targets, log_probs = _targets_and_log_probs(y_true, logits, num_classes, multilabel, soft_targets)
        ce = -tf.reduce_sum(targets * log_probs, axis=-1)
        rce = -log_zero * tf.reduce_sum(targets * (1.0 - tf.exp(log_probs)), axis=-1)
        return alpha * ce + beta * rce

    loss.__name__ = "symmetric_cross_entropy"
    return loss


def bootstrapping(num_classes: int, beta: float, kind: str = "soft", multilabel: bool = False,
                  soft_targets: bool = False):
    """Reed et al. (2015): cross-entropy against β·y + (1 − β)·z, z = p (soft) or onehot(argmax p) (hard).

    z is the model's own prediction, held constant (no gradient flows through it).
    For a multi-label task, per label: z = σ(logit) (soft) or [logit > 0] (hard).
    """
    if kind not in BOOTSTRAP_TYPES:
        raise ValueError(f"bootstrapping kind must be one of {BOOTSTRAP_TYPES}, got {kind!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")

    def loss(y_true, logits):
        targets, log_probs = _targets_and_log_probs(y_true, logits, num_classes, multilabel, soft_targets)
        predicted = tf.stop_gradient(log_probs)
        if kind == "soft":
            own = tf.exp(predicted)
        else:
            own = tf.one_hot(tf.argmax(predicted, axis=-1), tf.shape(predicted)[-1], dtype=tf.float32)
        bootstrapped = beta * targets + (1.0 - beta) * own
        return -tf.reduce_sum(bootstrapped * log_probs, axis=-1)

    loss.__name__ = f"{kind}_bootstrapping"
    return loss


class GeneralizedCrossEntropy(Method):
    """Generalized cross entropy L_q (Zhang & Sabuncu, NeurIPS 2018); q = 0.7, the paper's value.

    Replaces the cross-entropy; per label with C = 2 for multi-label tasks.
    """

    name = "gce"
    defaults = {"gce_q": 0.7}
    description = "generalized cross entropy (1 − p_y^q)/q"
    replaces_loss = True

    def check(self, hp):
        _check_range(hp, "gce_q", 0.0, 1.0, low_open=True)

    def loss(self, hp, task, soft_targets=False):
        return generalized_cross_entropy(task.num_classes, float(hp["gce_q"]), task.multilabel, soft_targets)


class SymmetricCrossEntropy(Method):
    """Symmetric cross entropy α·CE + β·RCE (Wang et al., ICCV 2019); α = 0.1, β = 1.0, the paper's CIFAR-10
    values, log 0 = A = −4 (:data:`SCE_LOG_ZERO`).

    Replaces the cross-entropy; per label with C = 2 for multi-label tasks.
    """

    name = "sce"
    defaults = {"sce_alpha": 0.1, "sce_beta": 1.0}
    description = "symmetric cross entropy α·CE + β·RCE"
    replaces_loss = True

    def check(self, hp):
        _check_range(hp, "sce_alpha", 0.0, 1e3)
        _check_range(hp, "sce_beta", 0.0, 1e3)
        if hp["sce_alpha"] == 0 and hp["sce_beta"] == 0:
            raise ValueError("sce_alpha and sce_beta cannot both be 0")

    def loss(self, hp, task, soft_targets=False):
        return symmetric_cross_entropy(task.num_classes, float(hp["sce_alpha"]), float(hp["sce_beta"]),
                                       task.multilabel, soft_targets)


class Bootstrapping(Method):
    """Bootstrapping (Reed et al., ICLR 2015 workshop): soft (β = 0.95) or hard (β = 0.8).

    ``bootstrap_beta`` None (the default) means the paper's value for ``bootstrap_type``, so
    ``bootstrap[bootstrap_type=hard]`` is the paper's hard bootstrapping; the value used is recorded
    in ``final.json`` as ``bootstrap_beta_effective``. Replaces the cross-entropy; per label with
    C = 2 for multi-label tasks.
    """

    name = "bootstrap"
    defaults = {"bootstrap_type": "soft", "bootstrap_beta": None}
    description = "bootstrapped targets β·y + (1 − β)·prediction"
    replaces_loss = True

    def check(self, hp):
        if hp["bootstrap_type"] not in BOOTSTRAP_TYPES:
            raise ValueError(f"bootstrap_type must be one of {BOOTSTRAP_TYPES}, got {hp['bootstrap_type']!r}")
        if hp["bootstrap_beta"] is not None:
            _check_range(hp, "bootstrap_beta", 0.0, 1.0)

    @staticmethod
    def beta(hp) -> float:
        """β: as given, else the paper's value for the bootstrapping type."""
        if hp["bootstrap_beta"] is None:
            return BOOTSTRAP_PAPER_BETA[hp["bootstrap_type"]]
        return float(hp["bootstrap_beta"])

    def loss(self, hp, task, soft_targets=False):
        return bootstrapping(task.num_classes, self.beta(hp), hp["bootstrap_type"], task.multilabel, soft_targets)

    def summary(self, hp, context):
        return {"bootstrap_beta_effective": self.beta(hp)}

"""The usual remedies against over-fitting (paper §2.1), with its hyper-parameters."""

from __future__ import annotations

import math

from tfq_noise import keras
from tfq_noise.methods.base import Method, _check_range
from tfq_noise.models import DROPOUT_POSITIONS


class Baseline(Method):
    name = "baseline"
    description = "no regularization"


class EarlyStopping(Method):
    """Keeps the weights of the best validation epoch; stops after ``patience`` epochs without progress.

    The validation split is carved from the *noisy* training set (what a user
    has); ``validation_labels=clean`` in the run config measures the ideal case.
    """

    name = "early_stopping"
    defaults = {"patience": 5, "min_delta": 0.0}
    description = "best epoch on a held-out split"

    def check(self, hp):
        _check_range(hp, "patience", 1, 10_000, integer=True)
        _check_range(hp, "min_delta", 0.0, 1.0)

    def callbacks(self, hp, context):
        from tfq_noise.callbacks import BestEpochKeeper

        return [BestEpochKeeper(context.checkpoint_dir, monitor=context.validation_metric,
                                patience=int(hp["patience"]), min_delta=float(hp["min_delta"]), stop=True,
                                start_epoch=context.selection_start_epoch)]

    def selects_best_epoch(self, hp):
        return True


# The paper's CIFAR-10 run: AdamW's weight decay 0.01 at Adam's 1e-3 for 200 epochs of 352 steps
# (45,000 images, batch 128). Decoupled decay multiplies each kernel by (1 - lr·wd) per step, so the
# paper's kernels shrink by exp(-0.01 · 1e-3 · 70,400) = exp(-0.704) ≈ 0.49 in all, absent gradients.
PAPER_STEPS = 200 * 352
PAPER_LEARNING_RATE = 1e-3
PAPER_LOG_SHRINKAGE = 0.01 * PAPER_LEARNING_RATE * PAPER_STEPS


class WeightDecay(Method):
    """Weight decay 0.01 (paper §3.2).

    The paper writes an L2 penalty ``α Σ ||W||²`` but cites Loshchilov & Hutter's
    decoupled weight decay; ``decoupled`` (default) is AdamW (decay applied to
    kernels only, scaled by the learning rate as in AdamW), ``l2`` adds the
    penalty to the loss (``keras.regularizers.L2`` on every kernel).

    ``decay_rule``: ``fixed`` uses ``weight_decay`` as given. ``paper_total``
    (decoupled only) scales it so that the run's total shrinkage, exp(−wd·Σ_t lr_t),
    equals what ``weight_decay`` gives over the paper's 200 epochs at lr 1e-3: a
    shorter run gets a proportionally stronger per-step decay instead of a decay
    that barely acts. ``final.json`` records the effective value and the shrinkage.
    """

    name = "weight_decay"
    defaults = {"weight_decay": 0.01, "weight_decay_type": "decoupled", "decay_rule": "fixed"}
    description = "AdamW (or an L2 penalty)"
    TYPES = ("decoupled", "l2")
    RULES = ("fixed", "paper_total")

    def check(self, hp):
        _check_range(hp, "weight_decay", 0.0, 10.0)
        if hp["weight_decay_type"] not in self.TYPES:
            raise ValueError(f"weight_decay_type must be one of {self.TYPES}, got {hp['weight_decay_type']!r}")
        if hp["decay_rule"] not in self.RULES:
            raise ValueError(f"decay_rule must be one of {self.RULES}, got {hp['decay_rule']!r}")
        if hp["decay_rule"] == "paper_total" and hp["weight_decay_type"] != "decoupled":
            raise ValueError("decay_rule=paper_total matches AdamW's total shrinkage: it needs "
                             "weight_decay_type=decoupled")

    @staticmethod
    def effective_weight_decay(hp, context) -> float:
        """The AdamW coefficient this run uses (``weight_decay`` itself under the fixed rule)."""
        if hp["decay_rule"] == "fixed":
            return float(hp["weight_decay"])
        if context is None or not context.learning_rate_sum:
            raise ValueError("decay_rule=paper_total needs the run's learning-rate sum (TrainContext)")
        target = float(hp["weight_decay"]) * PAPER_LEARNING_RATE * PAPER_STEPS
        return target / context.learning_rate_sum

    def summary(self, hp, context):
        if hp["weight_decay_type"] != "decoupled" or context is None or not context.learning_rate_sum:
            return {}
        wd = self.effective_weight_decay(hp, context)
        return {"weight_decay_effective": wd,
                "weight_decay_total_shrinkage": 1.0 - math.exp(-wd * context.learning_rate_sum)}

    def model_kwargs(self, hp):
        return {"l2": float(hp["weight_decay"])} if hp["weight_decay_type"] == "l2" else {}

    def optimizer(self, hp, learning_rate, context=None):
        if hp["weight_decay_type"] != "decoupled":
            return None
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate,
                                           weight_decay=self.effective_weight_decay(hp, context))
        # Biases and BatchNorm parameters are not weights to shrink.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer


class Dropout(Method):
    name = "dropout"
    defaults = {"dropout_rate": 0.1, "dropout_position": "head"}
    description = "dropout layer(s); position among " + ", ".join(DROPOUT_POSITIONS)

    def check(self, hp):
        _check_range(hp, "dropout_rate", 0.0, 1.0, high_open=True)
        if hp["dropout_position"] not in DROPOUT_POSITIONS:
            raise ValueError(f"dropout_position must be one of {DROPOUT_POSITIONS}, got {hp['dropout_position']!r}")

    def model_kwargs(self, hp):
        return {"dropout_rate": float(hp["dropout_rate"]), "dropout_position": hp["dropout_position"]}


class LabelSmoothing(Method):
    """Targets (1 − α)·y + α/C (paper eq. 1); per label with C = 2 for multi-label tasks."""

    name = "label_smoothing"
    defaults = {"label_smoothing": 0.1}
    description = "smoothed targets"

    def check(self, hp):
        _check_range(hp, "label_smoothing", 0.0, 1.0, high_open=True)

    def label_smoothing(self, hp):
        return float(hp["label_smoothing"])

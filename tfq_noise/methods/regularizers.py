"""The usual remedies against over-fitting (paper §2.1), with its hyper-parameters."""

from __future__ import annotations

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


class WeightDecay(Method):
    """Weight decay 0.01 (paper §3.2).

    The paper writes an L2 penalty ``α Σ ||W||²`` but cites Loshchilov & Hutter's
    decoupled weight decay; ``decoupled`` (default) is AdamW (decay applied to
    kernels only, scaled by the learning rate as in AdamW), ``l2`` adds the
    penalty to the loss (``keras.regularizers.L2`` on every kernel).
    """

    name = "weight_decay"
    defaults = {"weight_decay": 0.01, "weight_decay_type": "decoupled"}
    description = "AdamW (or an L2 penalty)"
    TYPES = ("decoupled", "l2")

    def check(self, hp):
        _check_range(hp, "weight_decay", 0.0, 10.0)
        if hp["weight_decay_type"] not in self.TYPES:
            raise ValueError(f"weight_decay_type must be one of {self.TYPES}, got {hp['weight_decay_type']!r}")

    def model_kwargs(self, hp):
        return {"l2": float(hp["weight_decay"])} if hp["weight_decay_type"] == "l2" else {}

    def optimizer(self, hp, learning_rate):
        if hp["weight_decay_type"] != "decoupled":
            return None
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=float(hp["weight_decay"]))
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

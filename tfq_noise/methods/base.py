"""What a method may change in a run, and how methods compose.

A method is a name, default hyper-parameters and a few hooks; the one training
loop (:mod:`tfq_noise.train`) asks every method of a recipe at the same points.
A hook returns ``None`` (or nothing) where the method has no say, so methods
compose: ``quantization+early_stopping`` quantizes the model *and* stops early.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class Method:
    """Base class: a regularizer or compression method, and its hooks."""

    name: str = ""
    defaults: Mapping[str, Any] = {}
    description: str = ""
    # True for a method whose ``loss`` hook replaces the training loss (at most one per recipe).
    replaces_loss: bool = False
    # True for a method that trains fold runs of the recipe's other methods to filter the data (cleanlab).
    filters_data: bool = False

    def check(self, hp: Mapping[str, Any]) -> None:
        """Raises ValueError for invalid hyper-parameters."""

    def model_kwargs(self, hp) -> dict:
        """Arguments for the model builder (e.g. ``dropout_rate``)."""
        return {}

    def transform_model(self, model, hp, context):
        """Returns the model to train (e.g. a quantization-aware copy)."""
        return model

    def optimizer(self, hp, learning_rate, context=None):
        """An optimizer, or None to keep Adam. ``learning_rate`` is a number or a per-step schedule."""
        return None

    def summary(self, hp, context) -> dict:
        """Settings derived for this run (e.g. the effective weight decay), recorded in ``final.json``."""
        return {}

    def label_smoothing(self, hp) -> float:
        return 0.0

    def loss(self, hp, task, soft_targets: bool = False):
        """The training loss, a Keras loss function of ``(y_true, logits)``, or None to keep the task's.

        ``soft_targets``: the training batches carry target distributions [B, C]
        instead of class ids (see :meth:`soft_targets`).
        """
        return None

    def soft_targets(self, hp) -> bool:
        """True if :meth:`transform_dataset` turns class ids into target distributions [B, C]."""
        return False

    def transform_dataset(self, hp, dataset, num_classes: int, multilabel: bool, seed: int):
        """Returns the batched training ``tf.data`` pipeline to fit on (e.g. mixed pairs of examples)."""
        return dataset

    def callbacks(self, hp, context) -> list:
        return []

    def trainings(self, hp) -> int:
        """How many trainings a run of this method costs (confident learning: its K folds and the final one)."""
        return 1

    def fold_count(self, hp) -> int:
        """How many fold runs :meth:`filter_training_data` trains (0: none)."""
        return 0

    def fold_held_out(self, hp, data, seed: int) -> list:
        """The held-out training positions of each fold run, in fold order (empty: no folds)."""
        return []

    def filter_training_data(self, hp, data, seed: int, fit_fold):
        """Returns ``(data, info)`` with training examples removed (e.g. flagged label errors), or None.

        ``fit_fold(name, fold_data)`` trains a run of the recipe's other methods on ``fold_data`` and
        returns its predictions (the arrays of ``predictions.npz``).
        """
        return None

    def selects_best_epoch(self, hp) -> bool:
        """True if the final model is the best epoch on validation, not the last."""
        return False

    def selection_start_epoch(self, hp, epochs: int) -> int:
        """First epoch whose model may be selected (e.g. pruned models only)."""
        return 0


def _check_range(hp, key, low, high, *, low_open=False, high_open=False, integer=False):
    value = hp[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{key} must be an integer, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{key} must be in {lo}{low}, {high}{hi}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One or more methods with their resolved hyper-parameters."""

    methods: tuple[Method, ...]
    hparams: Mapping[str, Any]

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.methods)

    def model_kwargs(self) -> dict:
        kwargs = {}
        for method in self.methods:
            kwargs.update(method.model_kwargs(self.hparams))
        return kwargs

    def transform_model(self, model, context):
        for method in self.methods:
            model = method.transform_model(model, self.hparams, context)
        return model

    def optimizer(self, learning_rate, context=None):
        chosen = [o for o in (m.optimizer(self.hparams, learning_rate, context) for m in self.methods)
                  if o is not None]
        if len(chosen) > 1:
            raise ValueError(f"{self.name}: more than one method sets the optimizer")
        return chosen[0] if chosen else None

    def summary(self, context) -> dict:
        out = {}
        for method in self.methods:
            out.update(method.summary(self.hparams, context))
        return out

    def label_smoothing(self) -> float:
        return max([m.label_smoothing(self.hparams) for m in self.methods] + [0.0])

    def soft_targets(self) -> bool:
        return any(m.soft_targets(self.hparams) for m in self.methods)

    def loss(self, task):
        """The training loss: the one a method supplies, else the task's cross-entropy.

        With soft targets (mixup), single-label tasks get the cross-entropy against
        target distributions; multi-label losses take float targets already.
        """
        soft = self.soft_targets()
        chosen = [loss for loss in (m.loss(self.hparams, task, soft) for m in self.methods) if loss is not None]
        if len(chosen) > 1:
            raise ValueError(f"{self.name}: more than one method sets the loss")
        if chosen:
            return chosen[0]
        if soft and not task.multilabel:
            return task.loss(self.label_smoothing(), soft_targets=True)
        return task.loss(self.label_smoothing())

    def fit_metrics(self, task) -> list:
        """The metrics Keras shows while fitting (with soft targets: against each target's dominant class)."""
        if self.soft_targets():
            from tfq_noise.tasks import soft_target_fit_metrics

            return soft_target_fit_metrics(task)
        return task.fit_metrics()

    def transform_dataset(self, dataset, num_classes: int, multilabel: bool, seed: int):
        for method in self.methods:
            dataset = method.transform_dataset(self.hparams, dataset, num_classes, multilabel, seed)
        return dataset

    def callbacks(self, context) -> list:
        return [cb for m in self.methods for cb in m.callbacks(self.hparams, context)]

    def trainings(self) -> int:
        return max(m.trainings(self.hparams) for m in self.methods)

    def filter_training_data(self, data, seed: int, fit_fold):
        """``(data, info)``: the training data after every method's filter (info: what each removed)."""
        info = {}
        for method in self.methods:
            filtered = method.filter_training_data(self.hparams, data, seed, fit_fold)
            if filtered is not None:
                data, info[method.name] = filtered
        return data, info

    def fold_count(self) -> int:
        """How many fold runs the recipe's data filter trains (0: none)."""
        return max([m.fold_count(self.hparams) for m in self.methods] + [0])

    def check_folds(self, folds) -> None:
        """Raises ValueError unless every fold number in ``folds`` is one of the data filter's fold runs."""
        count = self.fold_count()
        if not count:
            raise ValueError(f"{self.name} trains no folds (only a data filter such as cleanlab does)")
        bad = [k for k in folds if not 0 <= k < count]
        if bad:
            raise ValueError(f"fold {bad[0]} is out of range; {self.name} trains folds 0 to {count - 1}")

    def fold_held_out(self, data, seed: int) -> list:
        """The held-out training positions of each of the data filter's fold runs (empty: no folds)."""
        for method in self.methods:
            held = method.fold_held_out(self.hparams, data, seed)
            if held:
                return held
        return []

    def fold_spec(self) -> str:
        """The methods a data filter's fold runs train with: the recipe's others ('baseline' if none)."""
        return "+".join(m.name for m in self.methods if not m.filters_data) or "baseline"

    def selects_best_epoch(self) -> bool:
        return any(m.selects_best_epoch(self.hparams) for m in self.methods)

    def selection_start_epoch(self, epochs: int) -> int:
        return max(m.selection_start_epoch(self.hparams, epochs) for m in self.methods)

"""The project's methods for a plain ``model.fit``: ``tfq_noise.method("sce+quantization")``.

    import tfq_noise

    m = tfq_noise.method("sce+quantization", epochs=20, steps_per_epoch=len(train_ds))   # or weight_bits=2, ...
    model = m.transform_model(model)                       # a tf_keras model with logits out
    model.compile(optimizer=m.optimizer(1e-3), loss=m.loss(num_classes=10), metrics=m.metrics(num_classes=10))
    model.fit(m.transform_dataset(train_ds, num_classes=10), epochs=20, validation_data=val_ds,
              callbacks=m.callbacks())

The runner (``python -m experiments.run``) asks every method of a recipe the same questions at the same points
of its one training loop (:mod:`tfq_noise.train`); :class:`FitMethod` asks them for a loop of your own, and
gives the hooks the facts they need (:class:`tfq_noise.train.TrainContext`): the epochs and steps per epoch
(pruning prunes at an epoch; ``weight_decay[decay_rule=paper_total]`` sums the learning rate over the steps),
the validation metric early stopping watches (``val_accuracy``: pass ``validation_data`` to ``fit``) and
where it keeps the best epoch's weights.

What a method changes, and where you apply it:

* the model: ``transform_model`` (quantization-aware training, unstructured pruning); ``dropout`` and the
  ``l2`` kind of ``weight_decay`` change how the model is *built*: :attr:`FitMethod.model_kwargs` lists the
  arguments :func:`tfq_noise.models.build_model` takes, and ``transform_model`` refuses a model of your own
  unless you say you built it so (``model_kwargs_applied=True``);
* the loss (``gce``, ``sce``, ``bootstrap``, ``label_smoothing``): ``loss``, of ``(labels, logits)``;
* the optimizer (decoupled ``weight_decay``: AdamW): ``optimizer``, Adam otherwise;
* the training batches (``mixup``): ``transform_dataset``, on a batched ``tf.data`` pipeline of
  ``(images, integer labels)``;
* the epochs (``early_stopping``, ``pruning``): ``callbacks``.

``cleanlab`` trains K fold models through the project's loop before the final one: it is not a ``fit`` method
(use ``experiments.run --methods=cleanlab``, or :func:`tfq_noise.find_label_errors` on out-of-sample
probabilities of your own).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tfq_noise import keras, methods
from tfq_noise.tasks import ClassificationTask

__all__ = ["FitMethod", "method"]

# Methods whose hooks read the run's length: pruning prunes at floor(prune_epoch_fraction · epochs) (and,
# unstructured, counts steps); weight decay under decay_rule=paper_total sums the learning rate over the steps.
_NEEDS_EPOCHS = {"pruning"}


def method(spec: str, *, epochs: int | None = None, steps_per_epoch: int | None = None,
           validation_metric: str = "val_accuracy", checkpoint_dir: str | Path | None = None,
           **hparams: Any) -> "FitMethod":
    """A method (or ``+``-joined methods, e.g. ``"sce+quantization"``) for ``model.fit``, with its defaults
    overridden by ``hparams`` (``weight_bits=2``, ``sce_beta=2.3026``...; :func:`tfq_noise.methods.default_hparams`
    lists a method's). ``epochs`` and ``steps_per_epoch`` describe the fit to come (pruning and
    ``decay_rule=paper_total`` need them); ``validation_metric`` is what early stopping watches;
    ``checkpoint_dir`` is where it keeps the best weights (default: a new temporary folder per ``callbacks()``).

    Raises ValueError for an unknown method or setting, a combination the registry refuses, ``cleanlab``,
    or a method that needs ``epochs`` / ``steps_per_epoch`` without them."""
    recipe = methods.resolve(spec, hparams)
    names = [m.name for m in recipe.methods]
    if "cleanlab" in names:
        raise ValueError("cleanlab trains K fold models through the project's training loop before its final one: "
                         "run it with python -m experiments.run --methods=cleanlab, or rank your labels with "
                         "tfq_noise.find_label_errors(labels, out_of_sample_probabilities)")
    needs_steps = (("pruning" in names and recipe.hparams["prune_structure"] == "unstructured")
                   or ("weight_decay" in names and recipe.hparams["decay_rule"] == "paper_total"))
    needs_epochs = needs_steps or bool(_NEEDS_EPOCHS & set(names))
    for value, name, needed in ((epochs, "epochs", needs_epochs), (steps_per_epoch, "steps_per_epoch", needs_steps)):
        if value is None and needed:
            raise ValueError(f"{recipe.name} needs {name}=... (the fit's {name.replace('_', ' ')}), given when the "
                             f"method is made: tfq_noise.method({spec!r}, {name}=...)")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return FitMethod(recipe, None if epochs is None else int(epochs),
                     None if steps_per_epoch is None else int(steps_per_epoch), validation_metric,
                     None if checkpoint_dir is None else Path(checkpoint_dir))


@dataclasses.dataclass
class FitMethod:
    """A resolved recipe (:class:`tfq_noise.methods.Recipe`) and the facts about the fit its hooks need.
    Made by :func:`method`."""

    recipe: methods.Recipe
    epochs: int | None
    steps_per_epoch: int | None
    validation_metric: str = "val_accuracy"
    checkpoint_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def hparams(self) -> dict:
        """Every setting of the recipe's methods, defaults included."""
        return dict(self.recipe.hparams)

    @property
    def model_kwargs(self) -> dict:
        """Arguments the recipe gives the model builder (``dropout_rate``, ``l2``...): empty for most methods."""
        return self.recipe.model_kwargs()

    @property
    def selects_best_epoch(self) -> bool:
        """True when the model ``fit`` leaves is the best validation epoch's, not the last (early stopping)."""
        return self.recipe.selects_best_epoch()

    def context(self, learning_rate=None, checkpoint_dir: Path | None = None):
        """The :class:`tfq_noise.train.TrainContext` the hooks read (``learning_rate``: the optimizer's, for
        the learning-rate sum of ``decay_rule=paper_total``; ``checkpoint_dir``: where early stopping keeps
        its best epoch)."""
        from tfq_noise.train import TrainContext

        epochs, steps = self.epochs or 0, self.steps_per_epoch or 0
        return TrainContext(epochs, steps, checkpoint_dir or self.checkpoint_dir or Path("."), self.validation_metric,
                            self.recipe.selection_start_epoch(epochs) if self.epochs else 0,
                            learning_rate_total(learning_rate, epochs * steps) if learning_rate is not None else None)

    def transform_model(self, model, *, model_kwargs_applied: bool = False):
        """The model to compile and fit: a quantization-aware copy for ``quantization``, pruning wrappers for
        unstructured pruning, ``model`` itself for the others. ``model`` must be a tf_keras model; see the
        module's notes for methods that change how the model is built."""
        from tfq_noise import require_tf_keras_model

        require_tf_keras_model(model)
        if self.model_kwargs and not model_kwargs_applied:
            settings = ", ".join(f"{k}={v!r}" for k, v in sorted(self.model_kwargs.items()))
            raise ValueError(f"{self.name} changes how the model is built ({settings}): build it with "
                             f"tfq_noise.models.build_model(name, ..., **m.model_kwargs), or build these into your "
                             f"own model and call transform_model(model, model_kwargs_applied=True)")
        return self.recipe.transform_model(model, self.context())

    def loss(self, num_classes: int):
        """The training loss, a function of ``(integer labels [B], logits [B, C])`` (mixup: of its target
        distributions [B, C]); the models' outputs must be logits, not probabilities."""
        return self.recipe.loss(ClassificationTask(int(num_classes)))

    def metrics(self, num_classes: int) -> list:
        """The accuracy Keras shows while fitting (against each mixed target's dominant class with mixup)."""
        return self.recipe.fit_metrics(ClassificationTask(int(num_classes)))

    def optimizer(self, learning_rate=1e-3):
        """The optimizer a method sets (AdamW for decoupled weight decay), else Adam; ``learning_rate`` a number
        or a ``keras.optimizers.schedules`` schedule."""
        return self.recipe.optimizer(learning_rate, self.context(learning_rate)) or keras.optimizers.Adam(learning_rate)

    def transform_dataset(self, dataset, num_classes: int, seed: int = 0):
        """The batches to fit on: mixup's mixed pairs, the batches as they are for other methods. ``dataset``:
        a batched ``tf.data.Dataset`` of ``(images, integer labels)`` (or with sample weights)."""
        return self.recipe.transform_dataset(dataset, int(num_classes), False, int(seed))

    def callbacks(self) -> list:
        """Keras callbacks to pass to ``fit`` (early stopping keeps, and restores at the end, the best epoch's
        weights on ``validation_metric``; pruning prunes at its epoch). Empty for most methods. Without a
        ``checkpoint_dir``, each call keeps its best epoch in a new temporary folder, so every ``fit`` starts
        its own comparison; with one, a second ``fit`` continues the first's, as a resumed run does."""
        directory = self.checkpoint_dir
        if directory is None and self.recipe.selects_best_epoch():
            directory = Path(tempfile.mkdtemp(prefix="tfq_noise_fit_"))
        return self.recipe.callbacks(self.context(checkpoint_dir=directory))

    def summary(self, learning_rate=None) -> dict:
        """Settings the methods derive for this fit (``prune_epoch``, ``weight_decay_effective``...)."""
        return self.recipe.summary(self.context(learning_rate))


def learning_rate_total(learning_rate, steps: int) -> float:
    """Σ_t lr_t over ``steps`` optimizer steps, for a number or a per-step schedule."""
    if not callable(learning_rate):
        return float(learning_rate) * steps
    import tensorflow as tf

    try:
        values = np.asarray(learning_rate(tf.range(steps, dtype=tf.int64)), np.float64)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError):
        values = None
    if values is None or values.shape != (steps,):  # a schedule that takes one step at a time
        values = np.array([float(learning_rate(step)) for step in range(steps)], np.float64)
    return float(np.sum(values))

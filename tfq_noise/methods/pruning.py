"""Magnitude pruning (paper §2.2): train, remove 75% of the filters/neurons, fine-tune.

The paper's text says the neurons with the *highest* L1 norm are removed, but
its reasoning ("smaller weights induce smaller activations which contribute
less") is that of removing the *smallest*, as in the magnitude pruning it
cites (Molchanov et al.). This project removes the smallest.

``prune_structure``:

* ``filters`` (default, the paper's structured pruning): in every Conv2D and
  every Dense layer but the output layers, the ``prune_ratio`` share of output
  filters with the smallest L1 norm is zeroed, with the BatchNorm scale and
  shift that follow them, and kept at zero while fine-tuning. tfmot has no
  filter pruning for convolutions, hence this code.
* ``unstructured``: tfmot's ``prune_low_magnitude`` (single weights) at
  constant sparsity ``prune_ratio`` from the same epoch on.

``prune_criterion`` ranks the filters of a layer followed by BatchNorm:

* ``l1`` (default, the paper's): the kernel's L1 norm. The BatchNorm that
  follows divides the filter's output by its own standard deviation, so the
  kernel's scale says little about the channel's contribution;
* ``bn_gamma``: |γ| of that BatchNorm (network slimming, Liu et al. 2017), the
  scale the channel actually leaves BatchNorm with;
* ``gamma_l1``: |γ|·‖W‖₁.

Layers without a following BatchNorm (Dense) are ranked by L1 under every
criterion. The prune epoch is ``floor(prune_epoch_fraction · epochs)``, so
with the default 0.5 at least as many epochs fine-tune the pruned network as
trained it before; under a cosine schedule fine-tuning runs from half the peak
learning rate down to zero.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow_model_optimization as tfmot

from tfq_noise import keras
from tfq_noise.methods.base import Method, _check_range

_PRUNABLE = ("Conv2D", "Dense")


def prunable_layers(model) -> list:
    """Conv2D and Dense layers whose outputs are not model outputs."""
    outputs = {t._keras_history.layer.name for t in model.outputs}  # pylint: disable=protected-access
    return [l for l in model.layers if type(l).__name__ in _PRUNABLE and l.name not in outputs]


def _following_batchnorm(layer):
    consumers = [node.outbound_layer for node in layer._outbound_nodes]  # pylint: disable=protected-access
    if len(consumers) == 1 and type(consumers[0]).__name__ == "BatchNormalization":
        return consumers[0]
    return None


def filter_l1_norms(kernel: np.ndarray) -> np.ndarray:
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


CRITERIA = ("l1", "bn_gamma", "gamma_l1")


def filter_scores(kernel: np.ndarray, gamma: np.ndarray | None, criterion: str) -> np.ndarray:
    """Per output filter, the importance ``criterion`` gives it (larger = kept first)."""
    if criterion not in CRITERIA:
        raise ValueError(f"prune_criterion must be one of {CRITERIA}, got {criterion!r}")
    norms = filter_l1_norms(kernel)
    if gamma is None or criterion == "l1":
        return norms
    gamma = np.abs(np.asarray(gamma, np.float64))
    return gamma if criterion == "bn_gamma" else gamma * norms


def smallest_filters_mask(kernel: np.ndarray, ratio: float, scores: np.ndarray | None = None) -> np.ndarray:
    """1 for kept filters, 0 for the ``round(ratio·n)`` with the smallest score (default: L1 norm;
    at least one kept)."""
    scores = filter_l1_norms(kernel) if scores is None else np.asarray(scores)
    n_removed = min(int(round(ratio * scores.size)), scores.size - 1)
    mask = np.ones(scores.size, dtype=kernel.dtype)
    mask[np.argsort(scores, kind="stable")[:n_removed]] = 0
    return mask


class StructuredPruning(keras.callbacks.Callback):
    """Zeroes the weakest filters at ``prune_epoch`` and keeps them zero after every batch.

    Resumable: after a restart past ``prune_epoch``, the mask is read back from
    the filters that are exactly zero.
    """

    def __init__(self, prune_epoch: int, ratio: float, criterion: str = "l1"):
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f"prune_criterion must be one of {CRITERIA}, got {criterion!r}")
        self.prune_epoch, self.ratio, self.criterion = prune_epoch, ratio, criterion
        self.masks = None  # list of (kernel, bias, bn_gamma, bn_beta, mask)

    def _targets(self):
        for layer in prunable_layers(self.model):
            bn = _following_batchnorm(layer)
            yield layer, getattr(layer, "bias", None), bn

    def compute_masks(self, from_zeros: bool = False):
        self.masks = []
        for layer, bias, bn in self._targets():
            kernel = layer.kernel.numpy()
            if from_zeros:
                mask = (filter_l1_norms(kernel) > 0).astype(kernel.dtype)
            else:
                gamma = bn.gamma.numpy() if bn is not None and bn.gamma is not None else None
                mask = smallest_filters_mask(kernel, self.ratio, filter_scores(kernel, gamma, self.criterion))
            extra = [bias] + ([bn.gamma, bn.beta] if bn is not None else [])
            self.masks.append((layer.kernel, [v for v in extra if v is not None], mask))
        self.apply_masks()

    def apply_masks(self):
        for kernel, extras, mask in self.masks:
            kernel.assign(kernel * mask)
            for variable in extras:
                variable.assign(variable * mask)

    def on_epoch_begin(self, epoch, logs=None):
        if self.masks is None and epoch >= self.prune_epoch:
            self.compute_masks(from_zeros=epoch > self.prune_epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.masks is not None:
            self.apply_masks()


class Pruning(Method):
    name = "pruning"
    defaults = {"prune_ratio": 0.75, "prune_structure": "filters", "prune_epoch_fraction": 0.5,
                "prune_criterion": "l1"}
    description = "magnitude pruning of a trained model, then fine-tuning"
    STRUCTURES = ("filters", "unstructured")

    def check(self, hp):
        _check_range(hp, "prune_ratio", 0.0, 1.0, high_open=True)
        _check_range(hp, "prune_epoch_fraction", 0.0, 1.0, high_open=True)
        if hp["prune_structure"] not in self.STRUCTURES:
            raise ValueError(f"prune_structure must be one of {self.STRUCTURES}, got {hp['prune_structure']!r}")
        if hp["prune_criterion"] not in CRITERIA:
            raise ValueError(f"prune_criterion must be one of {CRITERIA}, got {hp['prune_criterion']!r}")

    @staticmethod
    def prune_epoch(hp, epochs: int) -> int:
        # Floor: with the default 0.5, fine-tuning gets at least as many epochs as training before it.
        return int(math.floor(hp["prune_epoch_fraction"] * epochs))

    def selection_start_epoch(self, hp, epochs):
        # With early stopping, only pruned models may be kept.
        return self.prune_epoch(hp, epochs)

    def transform_model(self, model, hp, context):
        if hp["prune_structure"] != "unstructured":
            return model
        schedule = tfmot.sparsity.keras.ConstantSparsity(
            # tfmot counts the step before comparing it with begin_step: +1 starts at the epoch's first step.
            float(hp["prune_ratio"]), begin_step=self.prune_epoch(hp, context.epochs) * context.steps_per_epoch + 1,
            frequency=max(1, context.steps_per_epoch // 4),
        )
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)

    def callbacks(self, hp, context):
        if hp["prune_structure"] == "unstructured":
            return [tfmot.sparsity.keras.UpdatePruningStep()]
        return [StructuredPruning(self.prune_epoch(hp, context.epochs), float(hp["prune_ratio"]),
                                  hp["prune_criterion"])]

    def summary(self, hp, context):
        return {"prune_epoch": self.prune_epoch(hp, context.epochs)}

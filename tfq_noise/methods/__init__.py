"""The registry of methods: every regularizer of the paper, and the noisy-label field's robust losses,
mixup and confident learning (cleanlab), by name.

``resolve("quantization+early_stopping", {"weight_bits": 2})`` returns a
:class:`Recipe` with the methods' defaults overridden by the given values.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfq_noise.methods.base import Method, Recipe
from tfq_noise.methods.confident_learning import ConfidentLearning
from tfq_noise.methods.mixup import Mixup
from tfq_noise.methods.pruning import Pruning, StructuredPruning, prunable_layers
from tfq_noise.methods.quantization import Quantization
from tfq_noise.methods.regularizers import Baseline, Dropout, EarlyStopping, LabelSmoothing, WeightDecay
from tfq_noise.methods.robust_losses import Bootstrapping, GeneralizedCrossEntropy, SymmetricCrossEntropy

METHODS: dict[str, Method] = {
    m.name: m
    for m in (Baseline(), EarlyStopping(), WeightDecay(), Dropout(), LabelSmoothing(), Pruning(), Quantization(),
              GeneralizedCrossEntropy(), SymmetricCrossEntropy(), Bootstrapping(), Mixup(), ConfidentLearning())
}
# Pairs that cannot share one model.
_INCOMPATIBLE = {frozenset({"pruning", "quantization"})}
# Every hyper-parameter some method has.
_ALL_HPARAMS = frozenset(key for method in METHODS.values() for key in method.defaults)


def method_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names:
        raise ValueError("empty method name")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)} (combine with '+')")
    if len(set(names)) != len(names):
        raise ValueError(f"method listed twice in {spec!r}")
    if "baseline" in names and len(names) > 1:
        raise ValueError("'baseline' cannot be combined with other methods")
    for pair in _INCOMPATIBLE:
        if pair <= set(names):
            raise ValueError(f"methods {sorted(pair)} cannot be combined")
    losses = [n for n in names if METHODS[n].replaces_loss]
    if len(losses) > 1:
        raise ValueError(f"methods {losses} each replace the training loss: a run can use one of them")
    if losses and "label_smoothing" in names:
        raise ValueError(f"label_smoothing smooths the cross-entropy's targets and {losses[0]!r} replaces the "
                         f"cross-entropy: they cannot be combined")
    return names


def default_hparams(spec: str) -> dict:
    hp: dict[str, Any] = {}
    for name in method_names(spec):
        hp.update(METHODS[name].defaults)
    return hp


def resolve(spec: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """A recipe for ``spec`` ('+'-joined method names), with checked hyper-parameters.

    Overrides for keys that none of the methods uses are ignored, so one grid
    can pass e.g. ``weight_bits`` to every method; a key that no registered
    method has (a typo) is refused.
    """
    names = method_names(spec)
    hp = default_hparams(spec)
    unknown = sorted(set(overrides or {}) - set(_ALL_HPARAMS))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown}; methods have {sorted(_ALL_HPARAMS)}")
    for key, value in (overrides or {}).items():
        if key in hp:
            hp[key] = value
    methods = tuple(METHODS[n] for n in names)
    for method in methods:
        method.check(hp)
    return Recipe(methods, hp)


__all__ = ["METHODS", "Method", "Recipe", "StructuredPruning", "default_hparams", "method_names",
           "prunable_layers", "resolve"]

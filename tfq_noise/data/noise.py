"""Synthetic and human label noise, seeded and reproducible bit for bit.

Every random draw comes from ``np.random.default_rng(seed)`` in a fixed order, so a
(noise type, rate, seed, labels) tuple always gives the same noisy labels on any
machine with the same numpy major version.

Counts use round-half-up, ``floor(rate * n + 0.5)``, rather than Python's
round-half-to-even, so that e.g. 2.5 examples rounds to 3 on every path.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from tfq_noise.data import cifar10n

# CIFAR-10 pair ("asymmetric") noise of Patrini et al. (2017), used across the
# noisy-label literature: truck->automobile, bird->airplane, deer->horse, cat<->dog.
CIFAR10_PAIR_FLIPS: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

SYNTHETIC_TYPES = ("symmetric", "symmetric_exclusive", "pair")
NOISE_TYPES = SYNTHETIC_TYPES + tuple(cifar10n.NOISE_TYPES)


@dataclasses.dataclass(frozen=True)
class NoisyLabels:
    """Clean and noisy labels of one training set.

    Attributes:
      clean: int64 [N], the clean labels.
      noisy: int64 [N], the labels to train on.
      corrupted_mask: bool [N], True exactly where ``noisy != clean``.
      noise_type: one of ``NOISE_TYPES``.
      rate: the requested rate (None for CIFAR-10N types, whose rate is fixed by the
        annotators).
      realized_flip_rate: ``corrupted_mask.mean()``, the share of labels that differ.
      redrawn_mask: bool [N] or None: the examples the noise process selected. For
        ``symmetric`` this includes examples that re-drew their own label (so it has
        exactly round(rate * N) entries while ``corrupted_mask`` has about
        rate * (C-1)/C * N); for ``symmetric_exclusive`` and ``pair`` it equals
        ``corrupted_mask``; None for human noise.
    """

    clean: np.ndarray
    noisy: np.ndarray
    corrupted_mask: np.ndarray
    noise_type: str
    rate: float | None
    realized_flip_rate: float
    redrawn_mask: np.ndarray | None = None


def _count(rate: float, n: int) -> int:
    """round(rate * n), halves rounded up."""
    return int(math.floor(rate * n + 0.5))


def _check_rate(rate: float) -> float:
    if rate is None or isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    rate = float(rate)
    if not (0.0 <= rate <= 1.0):  # also rejects NaN
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    return rate


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"seed must be a non-negative int (noise must be reproducible), got {seed!r}"
        )
    return int(seed)


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array of class ids, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def _symmetric(
    labels: np.ndarray, rate: float, num_classes: int, seed: int, exclude_true: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric noise; returns (noisy, corrupted_mask, redrawn_mask)."""
    labels = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    n = labels.size
    chosen = rng.choice(n, size=_count(rate, n), replace=False)
    noisy = labels.copy()
    if exclude_true:
        # A uniform non-zero offset is a uniform draw among the C-1 other classes.
        offsets = rng.integers(1, num_classes, size=chosen.size)
        noisy[chosen] = (labels[chosen] + offsets) % num_classes
    else:
        noisy[chosen] = rng.integers(0, num_classes, size=chosen.size)
    redrawn = np.zeros(n, dtype=bool)
    redrawn[chosen] = True
    return noisy, noisy != labels, redrawn


def symmetric(
    labels: np.ndarray, rate: float, num_classes: int, seed: int, exclude_true: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric (uniform) label noise, as in the paper.

    Picks exactly round(rate * N) examples uniformly without replacement and gives
    each a label drawn uniformly from all ``num_classes`` classes, so about 1/C of
    them draw their own label again. The returned ``corrupted_mask`` is True only
    where the label actually changed, so its mean is about rate * (C-1)/C; use
    :func:`make_noisy_labels` (``redrawn_mask``) for the set of re-drawn examples.

    Args:
      labels: int [N] clean class ids in [0, num_classes).
      rate: share of examples re-drawn, in [0, 1].
      num_classes: C.
      seed: seed of ``np.random.default_rng``.
      exclude_true: draw only among the C-1 other classes, so every re-drawn
        example changes (then the flip rate is exactly round(rate * N) / N).

    Returns:
      ``(noisy_labels int64 [N], corrupted_mask bool [N])``.
    """
    noisy, corrupted, _ = _symmetric(labels, rate, num_classes, seed, exclude_true)
    return noisy, corrupted


def pair(labels: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 pair noise: truck->automobile, bird->airplane, deer->horse, cat<->dog.

    In each source class (truck, bird, deer, cat, dog) with n_c examples, exactly
    round(rate * n_c) examples, chosen uniformly without replacement, get the mapped
    label; the other classes are untouched. An exact share (rather than an
    independent coin per example) makes the realized rate equal the nominal one, as
    with :func:`symmetric`. Over a balanced dataset the overall flip rate is about
    rate / 2, since half of the classes are sources.

    Returns:
      ``(noisy_labels int64 [N], corrupted_mask bool [N])``.
    """
    labels = _check_labels(labels, 10)
    rate = _check_rate(rate)
    rng = np.random.default_rng(_check_seed(seed))
    noisy = labels.copy()
    for source in sorted(CIFAR10_PAIR_FLIPS):  # fixed order, so draws are reproducible
        members = np.flatnonzero(labels == source)
        chosen = rng.choice(members, size=_count(rate, members.size), replace=False)
        noisy[chosen] = CIFAR10_PAIR_FLIPS[source]
    return noisy, noisy != labels


def make_noisy_labels(
    noise_type: str,
    clean_labels: np.ndarray,
    rate: float | None,
    seed: int,
    num_classes: int = 10,
    human_labels: Mapping[str, np.ndarray] | None = None,
) -> NoisyLabels:
    """Noisy training labels of any supported type.

    Args:
      noise_type: ``'symmetric'`` (re-draw among all classes), ``'symmetric_exclusive'``
        (re-draw among the other classes), ``'pair'`` (CIFAR-10 class pairs), or a
        CIFAR-10N type: ``'aggre'``, ``'random1'``, ``'random2'``, ``'random3'``, ``'worst'``.
      clean_labels: int [N] in official order.
      rate: noise rate in [0, 1] for synthetic types. For CIFAR-10N types the rate is
        fixed by the annotators: pass None or 0; any other value is an error, since
        it would silently not be applied.
      seed: seed for the synthetic types (ignored by CIFAR-10N types, which are fixed).
      num_classes: C (``pair`` and CIFAR-10N require 10).
      human_labels: the dict from :func:`tfq_noise.data.cifar10n.load_human_labels`,
        required for CIFAR-10N types; its ``clean_label`` must equal ``clean_labels``.

    Raises:
      ValueError: unknown type (the message lists the valid ones), rate outside
        [0, 1] or given for a CIFAR-10N type, missing or mismatched human labels.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {noise_type!r}; valid: {', '.join(NOISE_TYPES)}")
    clean = _check_labels(clean_labels, num_classes)
    redrawn: np.ndarray | None
    if noise_type in ("symmetric", "symmetric_exclusive"):
        noisy, corrupted, redrawn = _symmetric(
            clean, rate, num_classes, seed, exclude_true=noise_type == "symmetric_exclusive"
        )
        nominal: float | None = float(rate)
    elif noise_type == "pair":
        if num_classes != 10:
            raise ValueError(f"pair noise is defined for CIFAR-10 (10 classes), got {num_classes}")
        noisy, corrupted = pair(clean, rate, seed)
        redrawn, nominal = corrupted.copy(), float(rate)
    else:
        if rate not in (None, 0, 0.0):
            raise ValueError(
                f"CIFAR-10N noise {noise_type!r} has a fixed rate set by its annotators; pass "
                f"rate=None (or 0), not {rate!r}"
            )
        if human_labels is None:
            raise ValueError(
                f"noise type {noise_type!r} needs human_labels: pass "
                "tfq_noise.data.cifar10n.load_human_labels('CIFAR-10_human.pt')"
            )
        if num_classes != 10:
            raise ValueError(f"CIFAR-10N noise needs num_classes=10, got {num_classes}")
        reference = np.asarray(human_labels[cifar10n.CLEAN_KEY])
        if reference.shape != clean.shape or not np.array_equal(reference, clean):
            raise ValueError(
                "clean_labels differ from CIFAR-10N's clean_label: they must be the 50,000 "
                "CIFAR-10 training labels in official order (see tfq_noise.data.cifar10)"
            )
        noisy = np.asarray(cifar10n.human_noisy_labels(human_labels, noise_type), dtype=np.int64)
        corrupted, redrawn, nominal = noisy != clean, None, None
    return NoisyLabels(
        clean=clean,
        noisy=noisy,
        corrupted_mask=corrupted,
        noise_type=noise_type,
        rate=nominal,
        realized_flip_rate=float(corrupted.mean()) if corrupted.size else 0.0,
        redrawn_mask=redrawn,
    )

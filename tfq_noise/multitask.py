"""Multi-label datasets for the training loop: FER+ (offline stand-in) and BP4D (the paper's §3.4).

Importing this module registers two preparers in :data:`tfq_noise.datasets.PREPARERS`
(``tfq_noise.datasets`` imports it, so ``prepare(config)`` finds them):

``ferplus`` (``config.noise_type='annotators'``, ``noise_rate=0``), ``dataset_kwargs``:

* ``annotators`` (1): the k crowd annotators whose votes make the noisy training
  labels (sampled per image with the run's seed; see :mod:`tfq_noise.data.ferplus`);
* ``threshold`` (2): votes out of 10 an emotion needs in the reference labels;
* ``decision_threshold`` (0.5): sigmoid probability above which a task is predicted present.
  A calibrated model trained on k annotators predicts the chance that k votes flag the emotion,
  so only thresholds in :func:`tfq_noise.data.ferplus.matched_decision_range` separate the
  reference's ``threshold`` votes from one fewer (k = 3: 0.5 does; k = 1: 0.15 does, 0.5 does
  not); a threshold outside that range is reported in the run's info and printed;
* ``val_size``, ``test_size`` (0 = all): fixed subsets, for smoke runs only.

Train = FER2013Train with the noisy labels of k annotators; ``train_corrupted``
marks the label entries where they differ from the reference (all 10 votes).
Validation = FER2013Valid with the noisy labels of k annotators (what a user
has), or the reference with ``validation_labels='clean'``;
``validation_fraction=0`` drops it. Test = FER2013Test against the reference.
``train_size`` > 0 keeps a fixed subset of FER2013Train. 8 tasks, the emotions.

``bp4d`` (``config.noise_type='original'``, ``noise_rate=0``: the labels are the FACS
coders' own, there is no cleaner reference), ``dataset_kwargs``:

* ``fold`` (1): the subject-independent fold that tests on ``bp4d.SUBJECT_PARTS[fold - 1]``
  and trains on the two other parts (note: ME-GraphAU numbers its folds the other
  way round: its fold 1 tests on part 3);
* ``image_size`` (299): frames are resized to ``image_size`` × ``image_size``, 3 channels,
  normalized to [-1, 1] (mean = std = 127.5, InceptionV3's preprocessing);
* ``in_memory`` (False): decode every frame into a uint8 array up front (small copies,
  tests) instead of reading them lazily (:class:`LazyImages`);
* ``tasks`` (all of T1..T8), ``images_subdir``, ``labels_subdir``, ``image_extension``
  (:class:`tfq_noise.data.bp4d.Bp4dLayout`), ``missing_images`` ('error' | 'skip'),
  ``missing_sequences`` ('error' | 'skip': leave out subjects/tasks without a label CSV);
* ``decision_threshold`` (0.5), ``val_size``, ``test_size`` (0 = all).

Validation = ``round(validation_fraction × training subjects)`` subjects (at least one)
held out of the training part, chosen once per fold (never frames of a training
subject: consecutive frames are near duplicates). 12 tasks, AU1 .. AU24 in the
paper's order. Unknown codes (9) are masked: per-label sample weights in the loss
and a mask in the F1, through :class:`MaskedMultiLabelTask`.

Lazily read images: with ``in_memory`` false, ``RunData``'s image fields are
:class:`LazyImages`, which ``tfq_noise.data.pipeline.make_dataset`` reads through their
own ``make_dataset`` (training and the per-epoch evaluation alike).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

import tfq_noise  # noqa: F401  (tf_keras before TensorFlow)
import tensorflow as tf

from tfq_noise import keras
from tfq_noise.config import RunConfig
from tfq_noise.data import bp4d, ferplus, pipeline
from tfq_noise.datasets import PREPARERS, SPLIT_SEED, DataPaths, RunData
from tfq_noise.tasks import MultiLabelTask, f1_scores

# The noise type each dataset accepts (its labels' noise is real, with no rate to set).
NOISE_TYPES: dict[str, tuple[str, ...]] = {"ferplus": ("annotators",), "bp4d": ("original",)}

BP4D_TASK_NAMES: tuple[str, ...] = tuple(f"AU{au}" for au in bp4d.AUS)
INCEPTION_MEAN_STD = 127.5  # pixel units: (x - 127.5) / 127.5 maps [0, 255] to [-1, 1]

FERPLUS_CAVEAT = (
    "FER+ stands in for BP4D: 8 emotions (not action units) from FER2013 faces; noisy labels are "
    "the votes of {k} sampled crowd annotator(s), evaluated against all 10 votes. One annotator "
    "gives one vote, so labels compete within an image."
)
BP4D_CAVEAT = (
    "BP4D labels are the FACS coders' only labels: training and 'clean' labels are the same, so "
    "memorization cannot be measured; unknown AU codes (9) are masked."
)


# --------------------------------------------------------------------- tasks


class MaskedMultiLabelTask(MultiLabelTask):
    """A :class:`MultiLabelTask` whose loss and fit metric accept per-label sample weights [B, T].

    Keras' ``BinaryCrossentropy`` averages over the tasks before weighting, so a
    [B, T] weight (BP4D's known-label mask) cannot be applied to it. Here the loss
    is the per-entry sigmoid cross-entropy [B, T] (with the paper's label-wise
    smoothing, C = 2); Keras multiplies it by the weights and averages over all
    B·T entries, so unknown labels add nothing.
    """

    def loss(self, label_smoothing: float = 0.0):
        smoothing = float(label_smoothing)

        def masked_binary_crossentropy(y_true, logits):
            targets = tf.cast(y_true, logits.dtype)
            if smoothing > 0:
                targets = targets * (1.0 - smoothing) + 0.5 * smoothing
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)

        return masked_binary_crossentropy

    def fit_metrics(self):
        logit_threshold = float(np.log(self.threshold / (1.0 - self.threshold)))

        def entry_accuracy(y_true, logits):
            return tf.cast(tf.equal(tf.cast(y_true, tf.float32) > 0.5, logits >= logit_threshold), tf.float32)

        return [keras.metrics.MeanMetricWrapper(entry_accuracy, name="accuracy")]


# --------------------------------------------------------------------- lazily read images


def _decoder(image_size: tuple[int, int], channels: int):
    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(image, image_size, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    return decode


class LazyImages:
    """Image files read on demand, standing in for a uint8 [N, H, W, C] array in :class:`RunData`.

    It has what the training loop asks of an image array: ``len``, ``shape``,
    ``dtype``, indexing by an index array (a subset, still lazy), and
    :meth:`make_dataset` with :func:`tfq_noise.data.pipeline.make_dataset`'s
    signature, which that function must dispatch to (see the module's notes).
    Frames are decoded, resized (antialiased) and rounded to uint8, so
    :meth:`load` (all in memory) gives bit-identical pixels.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[str], image_size: tuple[int, int], channels: int = 3):
        self.paths = np.asarray(paths, dtype=str)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), *self.image_size, self.channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._decode_paths(self.paths[[index]])[0]
        return LazyImages(self.paths[index], self.image_size, self.channels)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"{len(self)} images are read lazily from files: tfq_noise.data.pipeline.make_dataset must hand "
            "them to LazyImages.make_dataset (see tfq_noise.multitask), or call .load() for an array "
            "(dataset_kwargs in_memory=true)"
        )

    def _decode_paths(self, paths) -> np.ndarray:
        decode = _decoder(self.image_size, self.channels)
        dataset = tf.data.Dataset.from_tensor_slices(np.asarray(paths, str)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
        out = np.empty((len(paths), *self.image_size, self.channels), np.uint8)
        position = 0
        for batch in dataset:
            out[position:position + len(batch)] = batch.numpy()
            position += len(batch)
        return out

    def load(self) -> np.ndarray:
        """Every image decoded: uint8 [N, H, W, C]."""
        return self._decode_paths(self.paths)

    def make_dataset(self, labels, batch_size: int, training: bool, augment=False, seed: int = 0,
                     mean=None, std=None, cache: bool = True, sample_weights=None, drop_remainder: bool = False):
        """Like :func:`pipeline.make_dataset`, decoding files in the pipeline (``cache`` is ignored)."""
        del cache  # a BP4D training set does not fit in memory
        labels = np.asarray(labels)
        n = len(self)
        pipeline.check_dataset_arguments(n, self.channels, labels, batch_size, training, augment, mean, std)
        labels = labels.astype(np.int64) if np.issubdtype(labels.dtype, np.integer) else labels.astype(np.float32)
        tensors: tuple = (self.paths, labels)
        if sample_weights is not None:
            sample_weights = np.asarray(sample_weights, np.float32)
            if sample_weights.shape[:1] != (n,) or sample_weights.ndim > 2:
                raise ValueError(f"sample_weights must be [N] or [N, K] with N={n}, got {sample_weights.shape}")
            tensors += (sample_weights,)
        dataset = tf.data.Dataset.from_tensor_slices(tensors)
        if training:
            dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        decode = _decoder(self.image_size, self.channels)
        dataset = dataset.map(lambda path, *rest: (decode(path), *rest),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = pipeline.augment_batches(dataset, augment, seed)
        dataset = dataset.map(lambda x, *rest: (pipeline.normalize(x, mean, std), *rest),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------- helpers


def _options(config: RunConfig, defaults: Mapping[str, Any]) -> dict:
    """``config.dataset_kwargs`` over ``defaults``; unknown keys raise ValueError."""
    given = dict(config.dataset_kwargs or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown dataset_kwargs {unknown} for {config.dataset}; known: {sorted(defaults)}")
    return {**defaults, **given}


def _check_noise(config: RunConfig) -> None:
    allowed = NOISE_TYPES[config.dataset]
    if config.noise_type not in allowed:
        raise ValueError(
            f"{config.dataset}'s label noise is real: noise_type must be {' or '.join(map(repr, allowed))} "
            f"(got {config.noise_type!r})"
        )
    if config.noise_rate != 0:
        raise ValueError(f"{config.dataset} has no noise rate to set: noise_rate must be 0 (got {config.noise_rate})")


def _int_option(options, key, low, high=None) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        bounds = f"in {low}..{high}" if high else f">= {low}"
        raise ValueError(f"dataset_kwargs {key} must be an int {bounds}, got {value!r}")
    return int(value)


def _decision_threshold(options) -> float:
    value = options["decision_threshold"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"dataset_kwargs decision_threshold must be in (0, 1), got {value!r}")
    return float(value)


def _fixed_subset(n: int, size: int, salt: int = 0) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``size`` of ``n`` (all if size is 0)."""
    if size == 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SPLIT_SEED + salt).permutation(n)[:size])


def _prevalence(labels, mask=None) -> dict:
    labels = np.asarray(labels, np.float64)
    mask = np.ones_like(labels) if mask is None else np.asarray(mask, np.float64)
    return (labels * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1)


# --------------------------------------------------------------------- FER+

FERPLUS_DEFAULTS = {"annotators": 1, "threshold": 2, "decision_threshold": 0.5, "val_size": 0, "test_size": 0}


def prepare_ferplus(config: RunConfig, paths: DataPaths) -> RunData:
    """FER+ with the noisy labels of k crowd annotators (see the module docstring)."""
    _check_noise(config)
    options = _options(config, FERPLUS_DEFAULTS)
    k = _int_option(options, "annotators", 1, ferplus.NUM_VOTE_SLOTS)
    threshold = _int_option(options, "threshold", 1, ferplus.NUM_VOTE_SLOTS)
    val_size, test_size = _int_option(options, "val_size", 0), _int_option(options, "test_size", 0)
    directory = paths.ferplus_dir

    def load(split):
        return ferplus.load_split(split, directory, threshold=threshold, num_annotators=k, seed=config.seed)

    train, valid, test = load("train"), load("valid"), load("test")
    if config.train_size > len(train):
        raise ValueError(f"train_size={config.train_size} exceeds FER+'s {len(train)} training images")
    t = _fixed_subset(len(train), config.train_size)
    v = _fixed_subset(len(valid), val_size, 1) if config.validation_fraction > 0 else np.arange(0)
    s = _fixed_subset(len(test), test_size, 2)
    train_images = train.images[t]
    noisy, reference = train.noisy[t], train.reference[t]
    corrupted = (noisy > 0.5) != (reference > 0.5)
    mean, std = pipeline.channel_stats(train_images)
    val_labels = valid.noisy[v] if config.validation_labels == "noisy" else valid.reference[v]
    disagreement = ferplus.label_disagreement(noisy, reference)
    decision_threshold = _decision_threshold(options)
    low, high = ferplus.matched_decision_range(k, threshold)
    if not low < decision_threshold <= high:
        print(f"warning: decision_threshold={decision_threshold} is outside ({low:.3f}, {high:.3f}], where a "
              f"calibrated model trained on {k} annotator(s) flags exactly the emotions with >= {threshold} "
              "of 10 votes; F1 against the reference is capped below 1", flush=True)
    # The F1 ceiling at this threshold: a model that knew every test image's vote shares exactly.
    oracle = f1_scores(test.reference[s], ferplus.vote_share_oracle(test.votes[s], k, threshold, decision_threshold))
    return RunData(
        task=MultiLabelTask(list(ferplus.EMOTIONS), threshold=decision_threshold),
        train_images=train_images,
        train_labels=noisy,
        train_clean_labels=reference,
        train_corrupted=corrupted,
        val_images=valid.images[v],
        val_labels=val_labels,
        test_images=test.images[s],
        test_labels=test.reference[s],
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        info={
            "source": f"FER+ ({ferplus.resolve_dir(directory)}): FER2013Train / FER2013Valid / FER2013Test",
            "caveat": FERPLUS_CAVEAT.format(k=k),
            "annotators": k,
            "vote_threshold": threshold,
            "noisy_vote_threshold": ferplus.noisy_vote_threshold(k, threshold),
            "decision_threshold": decision_threshold,
            "matched_decision_range": [round(low, 4), round(high, 4)],
            "oracle_per_task_f1": dict(zip(ferplus.EMOTIONS, oracle.round(4).tolist())),
            "oracle_average_f1": round(float(oracle.mean()), 4),
            "train_examples": int(len(t)),
            "validation_examples": int(len(v)),
            "validation_labels": config.validation_labels,
            "test_examples": int(len(s)),
            "dropped_unknown_or_not_a_face": {"train": train.num_dropped, "valid": valid.num_dropped,
                                              "test": test.num_dropped},
            "train_flip_rate": float(corrupted.mean()),  # share of label entries noisy != reference
            "train_images_with_a_flip": disagreement["any"],
            "train_flip_rate_per_task": {e: disagreement[e] for e in ferplus.EMOTIONS},
            "train_noisy_prevalence": dict(zip(ferplus.EMOTIONS, _prevalence(noisy).round(4).tolist())),
            "test_prevalence": dict(zip(ferplus.EMOTIONS, _prevalence(test.reference[s]).round(4).tolist())),
        },
    )


# --------------------------------------------------------------------- BP4D

BP4D_DEFAULTS = {
    "fold": 1, "image_size": 299, "in_memory": False, "tasks": list(bp4d.TASKS),
    "images_subdir": bp4d.Bp4dLayout.images_subdir, "labels_subdir": bp4d.Bp4dLayout.labels_subdir,
    "image_extension": bp4d.Bp4dLayout.image_extension, "missing_images": "error", "missing_sequences": "error",
    "decision_threshold": 0.5, "val_size": 0, "test_size": 0,
}


def _bp4d_sequences(root: str, layout: bp4d.Bp4dLayout, subjects, tasks, missing: str) -> dict[str, list[str]]:
    """``{subject: [tasks with a label CSV]}``; with missing='error' every pair must exist."""
    if missing not in ("error", "skip"):
        raise ValueError(f"dataset_kwargs missing_sequences must be 'error' or 'skip', got {missing!r}")
    if missing == "error":
        return {s: list(tasks) for s in subjects}
    label_dir = os.path.join(root, layout.labels_subdir)
    found = {s: [t for t in tasks if os.path.isfile(os.path.join(label_dir, layout.label_file.format(subject=s, task=t)))]
             for s in subjects}
    return {s: ts for s, ts in found.items() if ts}


def _load_bp4d_frames(root, layout, sequences: Mapping[str, list[str]], missing_images: str) -> bp4d.Bp4dFrames:
    """Frames of every (subject, tasks) sequence, concatenated in the given order."""
    if not sequences:
        raise ValueError("no BP4D sequences with labels for these subjects")
    parts = [bp4d.load_frames(root, subjects=(s,), tasks=tuple(ts), layout=layout, missing_images=missing_images)
             for s, ts in sequences.items()]
    return bp4d.Bp4dFrames(
        paths=np.concatenate([p.paths for p in parts]), subjects=np.concatenate([p.subjects for p in parts]),
        tasks=np.concatenate([p.tasks for p in parts]), frames=np.concatenate([p.frames for p in parts]),
        labels=np.concatenate([p.labels for p in parts]), mask=np.concatenate([p.mask for p in parts]),
        aus=parts[0].aus, num_missing_images=sum(p.num_missing_images for p in parts),
    )


def validation_subjects(train_subjects: Sequence[str], fraction: float, fold: int) -> tuple[str, ...]:
    """The training subjects held out for validation: a fixed draw per fold, at least one if fraction > 0."""
    subjects = sorted(train_subjects)
    if fraction <= 0:
        return ()
    count = min(max(1, int(round(fraction * len(subjects)))), len(subjects) - 1)
    if count < 1:
        raise ValueError(f"cannot hold out a validation subject from {len(subjects)} training subject(s)")
    order = np.random.default_rng(SPLIT_SEED + fold).permutation(len(subjects))
    return tuple(sorted(subjects[i] for i in order[:count]))


def prepare_bp4d(config: RunConfig, paths: DataPaths) -> RunData:
    """BP4D AU occurrence, one subject-independent fold (see the module docstring)."""
    _check_noise(config)
    options = _options(config, BP4D_DEFAULTS)
    fold = _int_option(options, "fold", 1, 3)
    size = _int_option(options, "image_size", 1)
    val_size, test_size = _int_option(options, "val_size", 0), _int_option(options, "test_size", 0)
    if not isinstance(options["in_memory"], bool):
        raise ValueError(f"dataset_kwargs in_memory must be true or false, got {options['in_memory']!r}")
    tasks = options["tasks"]
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    layout = bp4d.Bp4dLayout(images_subdir=options["images_subdir"], labels_subdir=options["labels_subdir"],
                             image_extension=options["image_extension"])
    root = bp4d.resolve_root(paths.bp4d_dir)
    train_subjects, test_subjects = bp4d.cross_validation_subjects(fold)
    train_seq = _bp4d_sequences(root, layout, train_subjects, tasks, options["missing_sequences"])
    test_seq = _bp4d_sequences(root, layout, test_subjects, tasks, options["missing_sequences"])
    held_out = validation_subjects(list(train_seq), config.validation_fraction, fold)
    fit_seq = {s: ts for s, ts in train_seq.items() if s not in held_out}
    val_seq = {s: ts for s, ts in train_seq.items() if s in held_out}
    fit = _load_bp4d_frames(root, layout, fit_seq, options["missing_images"])
    test = _load_bp4d_frames(root, layout, test_seq, options["missing_images"])
    val = _load_bp4d_frames(root, layout, val_seq, options["missing_images"]) if val_seq else None

    if config.train_size > len(fit):
        raise ValueError(f"train_size={config.train_size} exceeds the fold's {len(fit)} training frames")
    t = _fixed_subset(len(fit), config.train_size)
    s = _fixed_subset(len(test), test_size, 2)
    v = _fixed_subset(len(val), val_size, 1) if val is not None else np.arange(0)

    def images(frames, index):
        if frames is None:
            return np.zeros((0, size, size, 3), np.uint8)
        lazy = LazyImages(frames.paths[index], (size, size), 3)
        return lazy.load() if options["in_memory"] else lazy

    train_labels = fit.labels[t]
    n_tasks = len(BP4D_TASK_NAMES)
    empty = np.zeros((0, n_tasks), np.float32)
    return RunData(
        task=MaskedMultiLabelTask(list(BP4D_TASK_NAMES), threshold=_decision_threshold(options)),
        train_images=images(fit, t),
        train_labels=train_labels,
        train_clean_labels=train_labels,
        train_corrupted=np.zeros(train_labels.shape, bool),
        val_images=images(val, v),
        val_labels=val.labels[v] if val is not None else empty,
        test_images=images(test, s),
        test_labels=test.labels[s],
        mean=np.full(3, INCEPTION_MEAN_STD, np.float32),
        std=np.full(3, INCEPTION_MEAN_STD, np.float32),
        train_weights=fit.mask[t],
        val_weights=val.mask[v] if val is not None else empty,
        test_weights=test.mask[s],
        info={
            "source": f"BP4D-Spontaneous ({root})",
            "caveat": BP4D_CAVEAT,
            "fold": fold,
            "train_subjects": sorted(fit_seq),
            "validation_subjects": sorted(val_seq),
            "test_subjects": sorted(test_seq),
            "image_size": size,
            "in_memory": options["in_memory"],
            "train_examples": int(len(t)),
            "validation_examples": int(len(v)),
            "test_examples": int(len(s)),
            "train_flip_rate": None,
            "unknown_label_share": float(1.0 - fit.mask[t].mean()),
            "missing_images_skipped": int(fit.num_missing_images + test.num_missing_images
                                          + (val.num_missing_images if val is not None else 0)),
            "train_prevalence": dict(zip(BP4D_TASK_NAMES, _prevalence(train_labels, fit.mask[t]).round(4).tolist())),
        },
    )


PREPARERS["ferplus"] = prepare_ferplus
PREPARERS["bp4d"] = prepare_bp4d

__all__ = ["BP4D_TASK_NAMES", "LazyImages", "MaskedMultiLabelTask", "NOISE_TYPES", "prepare_bp4d",
           "prepare_ferplus", "validation_subjects"]

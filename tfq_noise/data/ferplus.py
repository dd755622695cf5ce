"""FER+ (Barsoum et al., 2016): FER2013 faces with 10 crowd votes each.

The stand-in for BP4D that can be had offline: several binary facial-state labels
per image and real annotator disagreement. Layout (the FER+ authors'
``generate_training_data.py`` output)::

    ferplus/FER2013Train/label.csv, fer0000000.png, ...   (also FER2013Valid, FER2013Test)

``label.csv`` rows: ``filename,"(x, y, w, h)",`` then 10 vote counts in the order
of ``VOTE_NAMES``; images are 48x48 grayscale PNG.

Targets (8 emotions, multi-label):

* reference: emotion present if it got >= ``threshold`` (default 2) of the votes.
* noisy: what ``num_annotators`` = k randomly chosen annotators (default 1) would
  say. An image has 10 vote slots (one per annotator; an image with fewer
  recorded votes has empty slots that vote for nothing); k slots are sampled
  without replacement (seeded), and an emotion is present if it got
  >= ``noisy_vote_threshold(k, threshold)`` = max(1, round_half_up(threshold * k / 10))
  of them: the reference rule scaled to k voters, never below one vote. So k=1
  is the single annotator's vote, and k=10 reproduces the reference exactly.
  A sampled 'unknown' or 'NF' vote marks no emotion.

Images whose plurality vote (ties go to the emotion) is 'unknown' or 'NF' are
dropped, as in the FER+ authors' training code; ``num_dropped`` says how many.

Caveat to report with any figure: emotions are not action units, and one
annotator gives one vote, so labels compete within an image.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
import tarfile
from typing import Sequence

import numpy as np

from tfq_noise.data import base
from tfq_noise.data.pipeline import channel_stats
from tfq_noise.tasks import MultiLabelTask, f1_scores

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
VOTE_NAMES: tuple[str, ...] = EMOTIONS + ("unknown", "NF")
NUM_EMOTIONS = len(EMOTIONS)
NUM_VOTE_SLOTS = 10
IMAGE_SHAPE = (48, 48, 1)
SPLIT_FOLDERS: dict[str, str] = {
    "train": "FER2013Train",
    "valid": "FER2013Valid",
    "test": "FER2013Test",
}
ENV_VAR = "TFQ_NOISE_FERPLUS_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "tfq_noise", "ferplus")
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FerPlusSplit:
    """One FER+ split after dropping unknown/NF images.

    Attributes:
      name: 'train', 'valid' or 'test'.
      images: uint8 [N, 48, 48, 1].
      reference: float32 [N, 8], 1 where the emotion got >= threshold of all votes.
      noisy: float32 [N, 8], the labels of ``num_annotators`` sampled annotators.
      votes: int64 [N, 10], raw vote counts in ``VOTE_NAMES`` order.
      filenames: str [N].
      threshold, num_annotators, seed: the settings that produced the targets.
      num_dropped: images of label.csv dropped as majority 'unknown'/'NF'.
    """

    name: str
    images: np.ndarray
    reference: np.ndarray
    noisy: np.ndarray
    votes: np.ndarray
    filenames: np.ndarray
    threshold: int
    num_annotators: int
    seed: int
    num_dropped: int

    def __len__(self) -> int:
        return len(self.filenames)


# --------------------------------------------------------------------- labels


def read_label_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a FER+ ``label.csv``: returns ``(filenames str [N], votes int64 [N, 10])``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FER+ label file {path!r} not found")
    filenames: list[str] = []
    votes: list[list[int]] = []
    with open(path, newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != 2 + NUM_VOTE_SLOTS:
                raise ValueError(
                    f"{path}:{line_number}: expected filename, face box and 10 vote counts "
                    f"({2 + NUM_VOTE_SLOTS} fields), got {len(row)} fields"
                )
            try:
                counts = [int(value) for value in row[2:]]
            except ValueError:
                raise ValueError(f"{path}:{line_number}: vote counts must be integers, got {row[2:]}") from None
            if min(counts) < 0 or sum(counts) > NUM_VOTE_SLOTS:
                raise ValueError(
                    f"{path}:{line_number}: votes {counts} must be non-negative and sum to at "
                    f"most {NUM_VOTE_SLOTS} (one per annotator)"
                )
            filenames.append(row[0])
            votes.append(counts)
    if not filenames:
        raise ValueError(f"FER+ label file {path!r} has no rows")
    return np.array(filenames), np.array(votes, dtype=np.int64)


def _check_votes(votes: np.ndarray) -> np.ndarray:
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] != NUM_VOTE_SLOTS or not np.issubdtype(votes.dtype, np.integer):
        raise ValueError(f"votes must be an int [N, 10] array, got {votes.dtype} {votes.shape}")
    if votes.size and (votes.min() < 0 or votes.sum(axis=1).max() > NUM_VOTE_SLOTS):
        raise ValueError("votes must be non-negative counts summing to at most 10 per image")
    return votes.astype(np.int64)


def _check_threshold(threshold: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 1 <= threshold <= NUM_VOTE_SLOTS:
        raise ValueError(f"threshold must be an int vote count in 1..10, got {threshold!r}")
    return int(threshold)


def reference_targets(votes: np.ndarray, threshold: int = 2) -> np.ndarray:
    """float32 [N, 8]: 1 where an emotion got >= ``threshold`` of the image's votes."""
    votes = _check_votes(votes)
    return (votes[:, :NUM_EMOTIONS] >= _check_threshold(threshold)).astype(np.float32)


def keep_mask(votes: np.ndarray) -> np.ndarray:
    """bool [N]: False where the plurality vote is 'unknown' or 'NF' (ties favour emotions)."""
    votes = _check_votes(votes)
    return votes[:, :NUM_EMOTIONS].max(axis=1) >= votes[:, NUM_EMOTIONS:].max(axis=1)


def noisy_vote_threshold(num_annotators: int, threshold: int = 2) -> int:
    """Votes of k sampled annotators an emotion needs: max(1, round_half_up(threshold*k/10))."""
    if isinstance(num_annotators, bool) or not isinstance(num_annotators, (int, np.integer)) or not 1 <= num_annotators <= NUM_VOTE_SLOTS:
        raise ValueError(f"num_annotators must be an int in 1..10, got {num_annotators!r}")
    scaled = _check_threshold(threshold) * num_annotators / NUM_VOTE_SLOTS
    return max(1, int(math.floor(scaled + 0.5)))


def noisy_label_probability(votes: int, num_annotators: int, threshold: int = 2) -> float:
    """P(noisy label positive) for an emotion with ``votes`` of 10: what a calibrated model predicts.

    The k annotators are drawn without replacement, so their votes for the emotion follow a
    hypergeometric law; the noisy label needs ``noisy_vote_threshold(k, threshold)`` of them.
    """
    need = noisy_vote_threshold(num_annotators, threshold)
    total = math.comb(NUM_VOTE_SLOTS, num_annotators)
    return sum(math.comb(votes, j) * math.comb(NUM_VOTE_SLOTS - votes, num_annotators - j)
               for j in range(need, num_annotators + 1)) / total


def matched_decision_range(num_annotators: int, threshold: int = 2) -> tuple[float, float]:
    """(low, high]: the decision thresholds at which a calibrated model trained on k annotators'
    labels predicts exactly the reference (``threshold`` or more of 10 votes).

    k = 3, threshold 2: (0.30, 0.53], so the paper's 0.5 fits; k = 1: (0.1, 0.2], where 0.5
    would only flag emotions with 6 or more votes.
    """
    _check_threshold(threshold)
    return (noisy_label_probability(threshold - 1, num_annotators, threshold),
            noisy_label_probability(threshold, num_annotators, threshold))


def vote_share_oracle(votes: np.ndarray, num_annotators: int, threshold: int, decision_threshold: float) -> np.ndarray:
    """bool [N, 8]: what a perfectly calibrated model trained on k annotators' labels predicts.

    Its probability for an emotion with v of 10 votes is ``noisy_label_probability(v, k)``;
    scored against the reference it gives the F1 ceiling of a decision threshold.
    """
    votes = _check_votes(votes)
    table = np.array([noisy_label_probability(v, num_annotators, threshold) for v in range(NUM_VOTE_SLOTS + 1)])
    return table[np.clip(votes[:, :len(EMOTIONS)], 0, NUM_VOTE_SLOTS)] > decision_threshold


def sample_annotator_votes(votes: np.ndarray, num_annotators: int = 1, seed: int = 0) -> np.ndarray:
    """int64 [N, 10]: the vote counts of ``num_annotators`` slots sampled per image.

    Each image's 10 slots hold its recorded votes (as class ids, in class order) and,
    if fewer than 10 were recorded, empty slots. A seeded random permutation of the
    slots picks k of them without replacement.
    """
    votes = _check_votes(votes)
    noisy_vote_threshold(num_annotators)  # validates num_annotators
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n = len(votes)
    # Slot s of an image holds the class whose cumulative vote count first exceeds s;
    # slots past the recorded votes get the out-of-range id 10 (empty).
    cumulative = np.cumsum(votes, axis=1)
    slots = np.arange(NUM_VOTE_SLOTS)
    slot_class = (cumulative[:, None, :] <= slots[None, :, None]).sum(axis=2)  # [N, 10]
    rng = np.random.default_rng(seed)
    picked = np.argsort(rng.random((n, NUM_VOTE_SLOTS)), axis=1)[:, :num_annotators]
    sampled = np.take_along_axis(slot_class, picked, axis=1)
    counts = np.zeros((n, NUM_VOTE_SLOTS + 1), np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), num_annotators), sampled.ravel()), 1)
    return counts[:, :NUM_VOTE_SLOTS]


def noisy_targets(votes: np.ndarray, num_annotators: int = 1, threshold: int = 2, seed: int = 0) -> np.ndarray:
    """float32 [N, 8]: the emotions ``num_annotators`` sampled annotators would mark (see module doc)."""
    sampled = sample_annotator_votes(votes, num_annotators, seed)
    needed = noisy_vote_threshold(num_annotators, threshold)
    return (sampled[:, :NUM_EMOTIONS] >= needed).astype(np.float32)


def label_disagreement(noisy: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Share of label entries that differ between noisy and reference targets.

    Returns:
      ``{emotion: share of images where that emotion differs, ..., 'overall': share of
      all N*8 entries that differ, 'any': share of images with at least one difference}``.
    """
    noisy = np.asarray(noisy)
    reference = np.asarray(reference)
    if noisy.shape != reference.shape or noisy.ndim != 2 or noisy.shape[1] != NUM_EMOTIONS:
        raise ValueError(f"expected two [N, 8] arrays, got {noisy.shape} and {reference.shape}")
    if len(noisy) == 0:
        raise ValueError("no images to compare")
    differ = (noisy > 0.5) != (reference > 0.5)
    report = {emotion: float(differ[:, i].mean()) for i, emotion in enumerate(EMOTIONS)}
    report["overall"] = float(differ.mean())
    report["any"] = float(differ.any(axis=1).mean())
    return report


# --------------------------------------------------------------------- images


def unpack_archive(archive: str, destination: str) -> str:
    """Unpacks ``ferplus-images-and-labels.tar.gz`` once; returns the ``ferplus/`` folder.

    Idempotent: a destination already holding all three label files is reused.
    """
    folder = os.path.join(os.path.expanduser(destination), "ferplus")
    if all(os.path.isfile(os.path.join(folder, f, "label.csv")) for f in SPLIT_FOLDERS.values()):
        return folder
    if not os.path.isfile(archive):
        raise FileNotFoundError(f"FER+ archive {archive!r} not found")
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(os.path.dirname(folder), filter="data")  # refuses unsafe members
        else:  # Python < 3.11.4: check the paths ourselves
            for member in tar.getmembers():
                parts = member.name.replace("\\", "/").split("/")
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise ValueError(f"refusing unsafe archive member {member.name!r} in {archive!r}")
            tar.extractall(os.path.dirname(folder))
    if not os.path.isdir(folder):
        raise ValueError(f"{archive!r} did not contain a top-level ferplus/ folder")
    return folder


def resolve_dir(ferplus_dir: str | None) -> str:
    """The FER+ folder: the argument, else ``TFQ_NOISE_FERPLUS_DIR``; must hold the split folders."""
    directory = ferplus_dir if ferplus_dir is not None else os.environ.get(ENV_VAR) or None
    if directory is None:
        raise ValueError(
            f"no FER+ directory: pass ferplus_dir or set {ENV_VAR} to the unpacked ferplus/ "
            "folder (see unpack_archive)"
        )
    directory = os.path.expanduser(str(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"FER+ directory {directory!r} does not exist")
    nested = os.path.join(directory, "ferplus")
    if not os.path.isdir(os.path.join(directory, SPLIT_FOLDERS["test"])) and os.path.isdir(nested):
        directory = nested  # accept the folder the archive was unpacked into
    return directory


def decode_images(folder: str, filenames: Sequence[str]) -> np.ndarray:
    """Decodes 48x48 grayscale PNGs with tf.io.decode_png: uint8 [N, 48, 48, 1]."""
    import tfq_noise  # noqa: F401  (selects tf_keras before TensorFlow is imported)
    import tensorflow as tf

    images = np.empty((len(filenames),) + IMAGE_SHAPE, np.uint8)
    for i, name in enumerate(filenames):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"FER+ image {path!r}, listed in label.csv, is missing")
        image = tf.io.decode_png(tf.io.read_file(path), channels=1).numpy()
        if image.shape != IMAGE_SHAPE:
            raise ValueError(f"FER+ image {path!r} is {image.shape[:2]}, expected 48x48")
        images[i] = image
    return images


def _cached_images(folder: str, filenames: np.ndarray, label_csv: str, cache_dir: str | None) -> np.ndarray:
    """Decoded images from the .npz cache, decoding and caching them on a miss."""
    cache_dir = os.path.expanduser(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR)
    with open(label_csv, "rb") as handle:
        digest = hashlib.sha256(handle.read() + os.path.abspath(folder).encode()).hexdigest()[:16]
    cache_path = os.path.join(cache_dir, f"{os.path.basename(folder)}-v{_CACHE_VERSION}-{digest}.npz")
    if os.path.isfile(cache_path):
        with np.load(cache_path, allow_pickle=False) as cached:
            if np.array_equal(cached["filenames"], filenames) and cached["images"].shape == (len(filenames),) + IMAGE_SHAPE:
                return cached["images"]
    images = decode_images(folder, filenames)
    os.makedirs(cache_dir, exist_ok=True)
    partial = f"{cache_path}.{os.getpid()}.partial.npz"
    np.savez(partial, images=images, filenames=filenames)
    os.replace(partial, cache_path)  # atomic: readers never see half a file
    return images


def load_split(
    split: str,
    ferplus_dir: str | None = None,
    threshold: int = 2,
    num_annotators: int = 1,
    seed: int = 0,
    cache_dir: str | None = None,
) -> FerPlusSplit:
    """Loads one FER+ split with reference and noisy multi-label targets.

    Args:
      split: 'train', 'valid' or 'test'.
      ferplus_dir: the unpacked ``ferplus/`` folder (or its parent); default
        ``TFQ_NOISE_FERPLUS_DIR``.
      threshold: votes (of 10) an emotion needs in the reference.
      num_annotators: annotators sampled per image for the noisy targets.
      seed: seed of the annotator sampling (reproducible bit for bit).
      cache_dir: where decoded images are cached as .npz (default
        ``~/.cache/tfq_noise/ferplus``).
    """
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown FER+ split {split!r}; valid: {', '.join(SPLIT_FOLDERS)}")
    folder = os.path.join(resolve_dir(ferplus_dir), SPLIT_FOLDERS[split])
    label_csv = os.path.join(folder, "label.csv")
    filenames, votes = read_label_csv(label_csv)
    reference = reference_targets(votes, threshold)
    # Sample before dropping, so an image's noisy label does not depend on the drop rule.
    noisy = noisy_targets(votes, num_annotators, threshold, seed)
    images = _cached_images(folder, filenames, label_csv, cache_dir)
    keep = keep_mask(votes)
    return FerPlusSplit(
        name=split,
        images=images[keep],
        reference=reference[keep],
        noisy=noisy[keep],
        votes=votes[keep],
        filenames=filenames[keep],
        threshold=int(threshold),
        num_annotators=int(num_annotators),
        seed=int(seed),
        num_dropped=int((~keep).sum()),
    )


def load(
    ferplus_dir: str | None = None,
    threshold: int = 2,
    num_annotators: int = 1,
    seed: int = 0,
    cache_dir: str | None = None,
    splits: Sequence[str] = ("train", "valid", "test"),
) -> dict[str, FerPlusSplit]:
    """Loads several FER+ splits (see :func:`load_split`); returns ``{split: FerPlusSplit}``."""
    return {
        split: load_split(split, ferplus_dir, threshold, num_annotators, seed, cache_dir)
        for split in splits
    }

# --------------------------------------------------------------------- a run's data: --dataset=ferplus
#
# ``config.noise_type='annotators'``, ``noise_rate=0``; ``dataset_kwargs``:
#
# * ``annotators`` (1): the k crowd annotators whose votes make the noisy training
#   labels (sampled per image with the run's seed);
# * ``threshold`` (2): votes out of 10 an emotion needs in the reference labels;
# * ``decision_threshold`` (0.5): sigmoid probability above which a task is predicted present.
#   A calibrated model trained on k annotators predicts the chance that k votes flag the emotion,
#   so only thresholds in :func:`matched_decision_range` separate the reference's ``threshold``
#   votes from one fewer (k = 3: 0.5 does; k = 1: 0.15 does, 0.5 does not); a threshold outside
#   that range is reported in the run's info and printed;
# * ``val_size``, ``test_size`` (0 = all): fixed subsets, for smoke runs only.
#
# Train = FER2013Train with the noisy labels of k annotators; ``train_corrupted`` marks the
# label entries where they differ from the reference (all 10 votes). Validation = FER2013Valid
# with the noisy labels of k annotators (what a user has), or the reference with
# ``validation_labels='clean'``; ``validation_fraction=0`` drops it. Test = FER2013Test against
# the reference. ``train_size`` > 0 keeps a fixed subset of FER2013Train. 8 tasks, the emotions.

# The noise type this dataset accepts (its labels' noise is real, with no rate to set).
NOISE_TYPES: tuple[str, ...] = ("annotators",)

FERPLUS_CAVEAT = (
    "FER+ stands in for BP4D: 8 emotions (not action units) from FER2013 faces; noisy labels are "
    "the votes of {k} sampled crowd annotator(s), evaluated against all 10 votes. One annotator "
    "gives one vote, so labels compete within an image."
)

FERPLUS_DEFAULTS = {"annotators": 1, "threshold": 2, "decision_threshold": 0.5, "val_size": 0, "test_size": 0}


def prepare(config, paths: base.DataPaths) -> base.RunData:
    """FER+ with the noisy labels of k crowd annotators (see the notes above)."""
    base.check_real_noise(config, NOISE_TYPES)
    options = base.options(config, FERPLUS_DEFAULTS)
    k = base.int_option(options, "annotators", 1, NUM_VOTE_SLOTS)
    threshold = base.int_option(options, "threshold", 1, NUM_VOTE_SLOTS)
    val_size, test_size = base.int_option(options, "val_size", 0), base.int_option(options, "test_size", 0)
    directory = paths.ferplus_dir

    def load(split):
        return load_split(split, directory, threshold=threshold, num_annotators=k, seed=config.seed)

    train, valid, test = load("train"), load("valid"), load("test")
    if config.train_size > len(train):
        raise ValueError(f"train_size={config.train_size} exceeds FER+'s {len(train)} training images")
    t = base.fixed_subset(len(train), config.train_size)
    v = base.fixed_subset(len(valid), val_size, 1) if config.validation_fraction > 0 else np.arange(0)
    s = base.fixed_subset(len(test), test_size, 2)
    train_images = train.images[t]
    noisy, reference = train.noisy[t], train.reference[t]
    corrupted = (noisy > 0.5) != (reference > 0.5)
    mean, std = channel_stats(train_images)
    val_labels = valid.noisy[v] if config.validation_labels == "noisy" else valid.reference[v]
    disagreement = label_disagreement(noisy, reference)
    decision_threshold = base.decision_threshold(options)
    low, high = matched_decision_range(k, threshold)
    if not low < decision_threshold <= high:
        print(f"warning: decision_threshold={decision_threshold} is outside ({low:.3f}, {high:.3f}], where a "
              f"calibrated model trained on {k} annotator(s) flags exactly the emotions with >= {threshold} "
              "of 10 votes; F1 against the reference is capped below 1", flush=True)
    # The F1 ceiling at this threshold: a model that knew every test image's vote shares exactly.
    oracle = f1_scores(test.reference[s], vote_share_oracle(test.votes[s], k, threshold, decision_threshold))
    return base.RunData(
        task=MultiLabelTask(list(EMOTIONS), threshold=decision_threshold),
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
            "source": f"FER+ ({resolve_dir(directory)}): FER2013Train / FER2013Valid / FER2013Test",
            "caveat": FERPLUS_CAVEAT.format(k=k),
            "annotators": k,
            "vote_threshold": threshold,
            "noisy_vote_threshold": noisy_vote_threshold(k, threshold),
            "decision_threshold": decision_threshold,
            "matched_decision_range": [round(low, 4), round(high, 4)],
            "oracle_per_task_f1": dict(zip(EMOTIONS, oracle.round(4).tolist())),
            "oracle_average_f1": round(float(oracle.mean()), 4),
            "train_examples": int(len(t)),
            "validation_examples": int(len(v)),
            "validation_labels": config.validation_labels,
            "test_examples": int(len(s)),
            "dropped_unknown_or_not_a_face": {"train": train.num_dropped, "valid": valid.num_dropped,
                                              "test": test.num_dropped},
            "train_flip_rate": float(corrupted.mean()),  # share of label entries noisy != reference
            "train_images_with_a_flip": disagreement["any"],
            "train_flip_rate_per_task": {e: disagreement[e] for e in EMOTIONS},
            "train_noisy_prevalence": dict(zip(EMOTIONS, base.prevalence(noisy).round(4).tolist())),
            "test_prevalence": dict(zip(EMOTIONS, base.prevalence(test.reference[s]).round(4).tolist())),
        },
    )


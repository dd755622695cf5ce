"""BP4D-Spontaneous action-unit (AU) occurrence data, for users who hold a licensed copy.

BP4D is licensed and not available to this project; this loader follows the
documented layout and is tested on a generated fixture (``tests/bp4d_fixture.py``).

Layout (configurable through :class:`Bp4dLayout`, since prepared copies differ)::

    <root>/<images_subdir>/F001/T1/2440.jpg     one image per frame (name = frame number,
                                                zero padding or not)
    <root>/<labels_subdir>/F001_T1.csv         AU occurrence codes of one sequence

The release's ``AUCoding/AU_OCC`` CSVs have a header row whose first cell names the
frame column (``0`` in the release) and whose other cells are AU numbers (``1``, or
``AU1``/``AU01``); each row gives a frame number then one code per AU: 0 absent,
1 present, 9 unknown. Only frames with a CSV row are labelled; images of other
frames are ignored. Unknown codes are masked per AU (``mask == 0``) rather than
dropping the frame.

Images are not decoded here: :func:`make_image_dataset` reads them lazily in a
tf.data pipeline, since BP4D is ~150k large frames.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Mapping, Sequence

import numpy as np

from tfq_noise.data import base
from tfq_noise.data.lazy import LazyImages
from tfq_noise.tasks import MaskedMultiLabelTask

# The 12 AUs evaluated on BP4D in the AU literature and in the paper.
AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
UNKNOWN_CODE = 9
FEMALE_SUBJECTS: tuple[str, ...] = tuple(f"F{i:03d}" for i in range(1, 24))
MALE_SUBJECTS: tuple[str, ...] = tuple(f"M{i:03d}" for i in range(1, 19))
SUBJECTS: tuple[str, ...] = FEMALE_SUBJECTS + MALE_SUBJECTS
TASKS: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 9))
ENV_VAR = "TFQ_NOISE_BP4D_DIR"

# The subject-independent 3-part split used across the BP4D AU literature, as
# published with JAA-Net (Shao et al., ECCV 2018) and reused verbatim by e.g.
# ME-GraphAU (Luo et al., IJCAI 2022, `BP4D_Sequence_split`). Part k is the test
# set of one fold, the other two parts its training set. ME-GraphAU numbers its
# folds so that fold 1 tests on part 3, fold 2 on part 2, fold 3 on part 1.
SUBJECT_PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010",
     "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018",
     "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012",
     "M003", "F004", "F021", "F017", "M015", "F014"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Bp4dLayout:
    """Where a BP4D copy keeps its images and labels (relative to the root).

    Attributes:
      images_subdir: folder holding ``<subject>/<task>/<frame><ext>``. Prepared
        copies call it differently (``img``, ``2DFeatures``, aligned crops, ...).
      labels_subdir: folder holding the AU occurrence CSVs.
      image_extension: extension of the frame images, with the dot.
      label_file: name pattern of a sequence's CSV.
    """

    images_subdir: str = "img"
    labels_subdir: str = os.path.join("AUCoding", "AU_OCC")
    image_extension: str = ".jpg"
    label_file: str = "{subject}_{task}.csv"


@dataclasses.dataclass(frozen=True)
class Bp4dFrames:
    """Labelled BP4D frames (paths only; see :func:`make_image_dataset`).

    Attributes:
      paths: str [N] image paths.
      subjects, tasks: str [N].
      frames: int64 [N] frame numbers.
      labels: float32 [N, A], 1 present / 0 absent; 0 where unknown.
      mask: float32 [N, A], 1 where the code is known, 0 where it was 9 (unknown).
      aus: the A AU numbers, in column order.
      num_missing_images: labelled frames without an image that were skipped
        (only with ``missing_images='skip'``; otherwise 0).
    """

    paths: np.ndarray
    subjects: np.ndarray
    tasks: np.ndarray
    frames: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    aus: tuple[int, ...]
    num_missing_images: int = 0

    def __len__(self) -> int:
        return len(self.paths)


def cross_validation_subjects(test_part: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(train_subjects, test_subjects)`` of the fold that tests on part 1, 2 or 3."""
    if test_part not in (1, 2, 3):
        raise ValueError(f"test_part must be 1, 2 or 3 (see SUBJECT_PARTS), got {test_part!r}")
    train = tuple(s for k, part in enumerate(SUBJECT_PARTS, start=1) if k != test_part for s in part)
    return train, SUBJECT_PARTS[test_part - 1]


_AU_HEADER = re.compile(r"^(?:AU)?0*(\d+)$", re.IGNORECASE)


def read_au_csv(path: str, aus: Sequence[int] = AUS) -> tuple[np.ndarray, np.ndarray]:
    """Reads one AU occurrence CSV.

    Returns:
      ``(frames int64 [F], codes int64 [F, len(aus)])`` with codes in {0, 1, 9}.

    Raises:
      FileNotFoundError, or ValueError naming the file and line for a missing AU
      column, a bad code, a non-integer cell or a repeated frame.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BP4D AU label file {path!r} not found")
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"BP4D AU label file {path!r} is empty")
    columns: dict[int, int] = {}
    for position, cell in enumerate(rows[0][1:], start=1):
        match = _AU_HEADER.match(cell.strip())
        if match is None:
            raise ValueError(f"{path}:1: header cell {cell!r} is not an AU number")
        columns[int(match.group(1))] = position
    missing = [au for au in aus if au not in columns]
    if missing:
        raise ValueError(f"{path}: no column for AU {missing}; header has AUs {sorted(columns)}")
    wanted = [columns[au] for au in aus]
    frames = np.empty(len(rows) - 1, np.int64)
    codes = np.empty((len(rows) - 1, len(wanted)), np.int64)
    for i, row in enumerate(rows[1:]):
        line = i + 2
        try:
            frames[i] = int(float(row[0]))
            codes[i] = [int(float(row[c])) for c in wanted]
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{line}: expected a frame number and one integer code per AU, got {row}") from None
    bad = ~np.isin(codes, (0, 1, UNKNOWN_CODE))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{path}:{i + 2}: AU{aus[j]} code {codes[i, j]} is not 0, 1 or 9 (unknown)")
    unique, counts = np.unique(frames, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: frame {unique[counts > 1][0]} appears more than once")
    return frames, codes


def _frame_images(folder: str, extension: str) -> dict[int, str]:
    """Frame number -> file name for the images of one sequence (padding ignored)."""
    if not os.path.isdir(folder):
        return {}
    images: dict[int, str] = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() != extension.lower() or not stem.isdigit():
            continue
        frame = int(stem)
        if frame in images:
            raise ValueError(f"{folder}: {images[frame]!r} and {name!r} are both frame {frame}")
        images[frame] = name
    return images


def resolve_root(root: str | None) -> str:
    """The BP4D root: the argument, else ``TFQ_NOISE_BP4D_DIR``."""
    directory = root if root is not None else os.environ.get(ENV_VAR) or None
    if directory is None:
        raise ValueError(f"no BP4D directory: pass root or set {ENV_VAR}")
    directory = os.path.expanduser(str(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"BP4D directory {directory!r} does not exist")
    return directory


def load_frames(
    root: str | None = None,
    subjects: Sequence[str] = SUBJECTS,
    tasks: Sequence[str] = TASKS,
    layout: Bp4dLayout = Bp4dLayout(),
    aus: Sequence[int] = AUS,
    missing_images: str = "error",
) -> Bp4dFrames:
    """Labelled frames of the given subjects and tasks, in subject, task, frame order.

    Args:
      root: BP4D root (default ``TFQ_NOISE_BP4D_DIR``).
      subjects, tasks: which sequences; each must have a label CSV.
      layout: folder names and extensions of this copy.
      aus: AU columns to return, in order.
      missing_images: 'error' (default) raises if a labelled frame has no image;
        'skip' leaves such frames out and counts them in ``num_missing_images``.

    Raises:
      FileNotFoundError: root, a label CSV or (with 'error') an image is missing.
      ValueError: malformed CSV, bad argument.
    """
    if missing_images not in ("error", "skip"):
        raise ValueError(f"missing_images must be 'error' or 'skip', got {missing_images!r}")
    if not subjects or not tasks:
        raise ValueError("give at least one subject and one task")
    root = resolve_root(root)
    aus = tuple(int(au) for au in aus)
    label_dir = os.path.join(root, layout.labels_subdir)
    if not os.path.isdir(label_dir):
        raise FileNotFoundError(
            f"BP4D label folder {label_dir!r} does not exist; set Bp4dLayout(labels_subdir=...) "
            "to where this copy keeps the AU occurrence CSVs"
        )
    image_dir = os.path.join(root, layout.images_subdir)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"BP4D image folder {image_dir!r} does not exist; set Bp4dLayout(images_subdir=...)"
        )
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("paths", "subjects", "tasks", "frames", "codes")}
    missing_files: list[str] = []
    num_missing = 0
    for subject in subjects:
        for task in tasks:
            csv_path = os.path.join(label_dir, layout.label_file.format(subject=subject, task=task))
            if not os.path.isfile(csv_path):
                missing_files.append(csv_path)
                continue
            frames, codes = read_au_csv(csv_path, aus)
            folder = os.path.join(image_dir, subject, task)
            images = _frame_images(folder, layout.image_extension)
            has_image = np.array([f in images for f in frames], dtype=bool)
            if not has_image.all():
                if missing_images == "error":
                    absent = frames[~has_image]
                    raise FileNotFoundError(
                        f"{(~has_image).sum()} labelled frames of {subject}/{task} have no "
                        f"'{layout.image_extension}' image in {folder!r} (first: frame {absent[0]}); "
                        "check Bp4dLayout, or pass missing_images='skip' to leave them out"
                    )
                num_missing += int((~has_image).sum())
                frames, codes = frames[has_image], codes[has_image]
            order = np.argsort(frames)
            frames, codes = frames[order], codes[order]
            columns["paths"].append(np.array([os.path.join(folder, images[f]) for f in frames], dtype=str))
            columns["subjects"].append(np.full(len(frames), subject))
            columns["tasks"].append(np.full(len(frames), task))
            columns["frames"].append(frames)
            columns["codes"].append(codes)
    if missing_files:
        raise FileNotFoundError(
            f"{len(missing_files)} BP4D label CSVs are missing (first: {missing_files[0]!r}); "
            "restrict subjects/tasks to the sequences this copy has, or fix Bp4dLayout"
        )
    codes = np.concatenate(columns["codes"]) if columns["codes"] else np.empty((0, len(aus)), np.int64)
    if len(codes) == 0:
        raise ValueError(f"no labelled frames with images for subjects {list(subjects)}, tasks {list(tasks)}")
    known = codes != UNKNOWN_CODE
    return Bp4dFrames(
        paths=np.concatenate(columns["paths"]),
        subjects=np.concatenate(columns["subjects"]),
        tasks=np.concatenate(columns["tasks"]),
        frames=np.concatenate(columns["frames"]),
        labels=((codes == 1) & known).astype(np.float32),
        mask=known.astype(np.float32),
        aus=aus,
        num_missing_images=num_missing,
    )


def load_fold(
    test_part: int,
    root: str | None = None,
    tasks: Sequence[str] = TASKS,
    layout: Bp4dLayout = Bp4dLayout(),
    aus: Sequence[int] = AUS,
    missing_images: str = "error",
) -> tuple[Bp4dFrames, Bp4dFrames]:
    """``(train, test)`` frames of the subject-independent fold testing on ``test_part``."""
    train_subjects, test_subjects = cross_validation_subjects(test_part)
    kwargs = dict(root=root, tasks=tasks, layout=layout, aus=aus, missing_images=missing_images)
    return load_frames(subjects=train_subjects, **kwargs), load_frames(subjects=test_subjects, **kwargs)


def make_image_dataset(
    frames: Bp4dFrames,
    batch_size: int,
    training: bool,
    image_size: tuple[int, int] = (224, 224),
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
):
    """tf.data pipeline reading the frames lazily: ``(images, labels, mask)`` batches.

    Images are decoded (JPEG/PNG/BMP via ``tf.io.decode_image``, 3 channels),
    resized to ``image_size`` and normalized like :func:`pipeline.make_dataset`
    (pixel-unit mean/std, or /255 if both None). ``mask`` is float32 [B, A]; pass it
    as per-AU sample weights so unknown codes do not count in the loss. Training
    shuffles the file list (seeded, reshuffled every epoch) before decoding.
    """
    from tfq_noise.data import pipeline  # imports TensorFlow

    tf = pipeline.tf
    if len(frames) == 0:
        raise ValueError("no frames to read")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    pipeline.validate_stats(mean, std, 3)

    def read(path, labels, mask):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, image_size, antialias=True)
        return pipeline.normalize(image, mean, std), labels, mask

    dataset = tf.data.Dataset.from_tensor_slices((frames.paths, frames.labels, frames.mask))
    if training:
        dataset = dataset.shuffle(len(frames), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

# --------------------------------------------------------------------- a run's data: --dataset=bp4d
#
# ``config.noise_type='original'``, ``noise_rate=0`` (the labels are the FACS coders' own, there is
# no cleaner reference); ``dataset_kwargs``:
#
# * ``fold`` (1): the subject-independent fold that tests on ``SUBJECT_PARTS[fold - 1]`` and trains
#   on the two other parts (note: ME-GraphAU numbers its folds the other way round: its fold 1
#   tests on part 3);
# * ``image_size`` (299): frames are resized to ``image_size`` × ``image_size``, 3 channels,
#   normalized to [-1, 1] (mean = std = 127.5, InceptionV3's preprocessing);
# * ``in_memory`` (False): decode every frame into a uint8 array up front (small copies, tests)
#   instead of reading them lazily (:class:`tfq_noise.data.lazy.LazyImages`);
# * ``tasks`` (all of T1..T8), ``images_subdir``, ``labels_subdir``, ``image_extension``
#   (:class:`Bp4dLayout`), ``missing_images`` ('error' | 'skip'), ``missing_sequences``
#   ('error' | 'skip': leave out subjects/tasks without a label CSV);
# * ``decision_threshold`` (0.5), ``val_size``, ``test_size`` (0 = all).
#
# Validation = ``round(validation_fraction × training subjects)`` subjects (at least one) held out
# of the training part, chosen once per fold (never frames of a training subject: consecutive
# frames are near duplicates). 12 tasks, AU1 .. AU24 in the paper's order. Unknown codes (9) are
# masked: per-label sample weights in the loss and a mask in the F1, through
# :class:`tfq_noise.tasks.MaskedMultiLabelTask`.

# The noise type this dataset accepts (its labels' noise is real, with no rate to set).
NOISE_TYPES: tuple[str, ...] = ("original",)
BP4D_TASK_NAMES: tuple[str, ...] = tuple(f"AU{au}" for au in AUS)
INCEPTION_MEAN_STD = 127.5  # pixel units: (x - 127.5) / 127.5 maps [0, 255] to [-1, 1]
BP4D_CAVEAT = (
    "BP4D labels are the FACS coders' only labels: training and 'clean' labels are the same, so "
    "memorization cannot be measured; unknown AU codes (9) are masked."
)

BP4D_DEFAULTS = {
    "fold": 1, "image_size": 299, "in_memory": False, "tasks": list(TASKS),
    "images_subdir": Bp4dLayout.images_subdir, "labels_subdir": Bp4dLayout.labels_subdir,
    "image_extension": Bp4dLayout.image_extension, "missing_images": "error", "missing_sequences": "error",
    "decision_threshold": 0.5, "val_size": 0, "test_size": 0,
}


def _sequences(root: str, layout: Bp4dLayout, subjects, tasks, missing: str) -> dict[str, list[str]]:
    """``{subject: [tasks with a label CSV]}``; with missing='error' every pair must exist."""
    if missing not in ("error", "skip"):
        raise ValueError(f"dataset_kwargs missing_sequences must be 'error' or 'skip', got {missing!r}")
    if missing == "error":
        return {s: list(tasks) for s in subjects}
    label_dir = os.path.join(root, layout.labels_subdir)
    found = {s: [t for t in tasks if os.path.isfile(os.path.join(label_dir, layout.label_file.format(subject=s, task=t)))]
             for s in subjects}
    return {s: ts for s, ts in found.items() if ts}


def _load_sequence_frames(root, layout, sequences: Mapping[str, list[str]], missing_images: str) -> Bp4dFrames:
    """Frames of every (subject, tasks) sequence, concatenated in the given order."""
    if not sequences:
        raise ValueError("no BP4D sequences with labels for these subjects")
    parts = [load_frames(root, subjects=(s,), tasks=tuple(ts), layout=layout, missing_images=missing_images)
             for s, ts in sequences.items()]
    return Bp4dFrames(
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
    order = np.random.default_rng(base.SPLIT_SEED + fold).permutation(len(subjects))
    return tuple(sorted(subjects[i] for i in order[:count]))


def prepare(config, paths: base.DataPaths) -> base.RunData:
    """BP4D AU occurrence, one subject-independent fold (see the notes above)."""
    base.check_real_noise(config, NOISE_TYPES)
    options = base.options(config, BP4D_DEFAULTS)
    fold = base.int_option(options, "fold", 1, 3)
    size = base.int_option(options, "image_size", 1)
    val_size, test_size = base.int_option(options, "val_size", 0), base.int_option(options, "test_size", 0)
    if not isinstance(options["in_memory"], bool):
        raise ValueError(f"dataset_kwargs in_memory must be true or false, got {options['in_memory']!r}")
    tasks = options["tasks"]
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    layout = Bp4dLayout(images_subdir=options["images_subdir"], labels_subdir=options["labels_subdir"],
                             image_extension=options["image_extension"])
    root = resolve_root(paths.bp4d_dir)
    train_subjects, test_subjects = cross_validation_subjects(fold)
    train_seq = _sequences(root, layout, train_subjects, tasks, options["missing_sequences"])
    test_seq = _sequences(root, layout, test_subjects, tasks, options["missing_sequences"])
    held_out = validation_subjects(list(train_seq), config.validation_fraction, fold)
    fit_seq = {s: ts for s, ts in train_seq.items() if s not in held_out}
    val_seq = {s: ts for s, ts in train_seq.items() if s in held_out}
    fit = _load_sequence_frames(root, layout, fit_seq, options["missing_images"])
    test = _load_sequence_frames(root, layout, test_seq, options["missing_images"])
    val = _load_sequence_frames(root, layout, val_seq, options["missing_images"]) if val_seq else None

    if config.train_size > len(fit):
        raise ValueError(f"train_size={config.train_size} exceeds the fold's {len(fit)} training frames")
    t = base.fixed_subset(len(fit), config.train_size)
    s = base.fixed_subset(len(test), test_size, 2)
    v = base.fixed_subset(len(val), val_size, 1) if val is not None else np.arange(0)

    def images(frames, index):
        if frames is None:
            return np.zeros((0, size, size, 3), np.uint8)
        lazy = LazyImages(frames.paths[index], (size, size), 3)
        return lazy.load() if options["in_memory"] else lazy

    train_labels = fit.labels[t]
    n_tasks = len(BP4D_TASK_NAMES)
    empty = np.zeros((0, n_tasks), np.float32)
    return base.RunData(
        task=MaskedMultiLabelTask(list(BP4D_TASK_NAMES), threshold=base.decision_threshold(options)),
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
            "train_prevalence": dict(zip(BP4D_TASK_NAMES, base.prevalence(train_labels, fit.mask[t]).round(4).tolist())),
        },
    )


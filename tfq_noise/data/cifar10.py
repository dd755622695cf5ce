"""CIFAR-10 from either the official binary files or TFDS, as identical arrays.

Both sources give the 50,000 training and 10,000 test images in the official order
(the order of ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin``),
so that per-example side data indexed by official position (CIFAR-10N's human
labels, the noise masks of an experiment) lines up whichever source was used.

Resolution order in :func:`load`: the ``cifar10_dir`` argument, then the
environment variable ``TFQ_NOISE_CIFAR10_DIR``, else TFDS (which downloads the
official archive; this needs internet access).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from tfq_noise.data import base, cifar10n, noise
from tfq_noise.data.pipeline import channel_stats
from tfq_noise.tasks import ClassificationTask

CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
NUM_TRAIN = 50_000
NUM_TEST = 10_000

ENV_VAR = "TFQ_NOISE_CIFAR10_DIR"
BINARY_FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
PIXELS_PER_IMAGE = 32 * 32 * 3
RECORD_BYTES = 1 + PIXELS_PER_IMAGE  # one label byte, then the R, G and B planes
RECORDS_PER_FILE = 10_000

# Caveat detection (see `jpeg_grid_score`): the JPEG-decoded offline copy scores
# about 0.4, images without a JPEG grid about 1.0 (0.92 even for JPEG images
# rescaled off the grid).
JPEG_GRID_THRESHOLD = 0.7
JPEG_GRID_SAMPLE = 2_000


@dataclasses.dataclass(frozen=True)
class Split:
    """One CIFAR-10 split in official order.

    Attributes:
      images: uint8 [N, 32, 32, 3], RGB.
      labels: int64 [N], class ids 0..9 (see ``CLASS_NAMES``).
      index: int64 [N], the official index of each example (0..N-1 in official
        order, so ``index == arange(N)`` for a loaded split).
    """

    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.shape[1:] != IMAGE_SHAPE or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 [N, 32, 32, 3], got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (n,) or self.index.shape != (n,):
            raise ValueError(
                f"labels {self.labels.shape} and index {self.index.shape} must both have "
                f"shape ({n},), one entry per image"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Cifar10:
    """CIFAR-10 train and test splits, where they came from, and what to say about it.

    Attributes:
      train, test: the splits, in official order.
      source: ``'tfds'`` or the resolved ``cifar-10-batches-bin`` directory.
      caveat: a sentence to report next to any figure obtained on this copy, or
        None when nothing is known to differ from the official data.
    """

    train: Split
    test: Split
    source: str
    caveat: str | None


def load(cifar10_dir: str | None = None, tfds_data_dir: str | None = None) -> Cifar10:
    """Loads CIFAR-10 in official order from a binary directory or from TFDS.

    Args:
      cifar10_dir: a directory holding ``cifar-10-batches-bin/`` (as the official
        ``cifar-10-binary.tar.gz`` unpacks) or that folder itself. If None, the
        environment variable ``TFQ_NOISE_CIFAR10_DIR`` is used if set and non-empty.
      tfds_data_dir: TFDS ``data_dir``; used only when no binary directory was
        given by argument or environment.

    Returns:
      A :class:`Cifar10`. For a binary directory, ``caveat`` is set when the pixels
      look JPEG-decoded (see :func:`jpeg_grid_score`), which is the case for the
      offline copy written by ``shared/datasets/cifar10/materialize.py``.

    Raises:
      ValueError: both ``cifar10_dir`` and ``tfds_data_dir`` were given, or a batch
        file is malformed.
      FileNotFoundError: the directory or a batch file is missing.
      RuntimeError: TFDS could not provide the dataset (e.g. no internet).
    """
    if cifar10_dir is not None and tfds_data_dir is not None:
        raise ValueError(
            "give either cifar10_dir (official binary files) or tfds_data_dir (TFDS), not both"
        )
    directory = cifar10_dir if cifar10_dir is not None else os.environ.get(ENV_VAR) or None
    if directory is not None:
        return load_binary(directory)
    return load_tfds(tfds_data_dir)


# --------------------------------------------------------------------------- binary


def resolve_binary_dir(directory: str) -> str:
    """Returns the ``cifar-10-batches-bin`` folder for ``directory`` (it or its parent)."""
    directory = os.path.expanduser(str(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"CIFAR-10 directory {directory!r} does not exist. Pass the folder that holds "
            f"{BINARY_FOLDER}/ (or that folder itself), e.g. one written by "
            "`python shared/datasets/cifar10/materialize.py OUT_DIR`, or unset "
            f"{ENV_VAR} to use TFDS."
        )
    nested = os.path.join(directory, BINARY_FOLDER)
    if os.path.isdir(nested):
        return nested
    if os.path.isfile(os.path.join(directory, TEST_FILE)) or os.path.isfile(
        os.path.join(directory, TRAIN_FILES[0])
    ):
        return directory
    raise FileNotFoundError(
        f"{directory!r} holds neither {BINARY_FOLDER}/ nor the batch files "
        f"({', '.join(TRAIN_FILES)}, {TEST_FILE}). Point it at the folder into which "
        "cifar-10-binary.tar.gz was unpacked."
    )


def read_batch_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one official CIFAR-10 binary batch file.

    Returns:
      ``(images uint8 [10000, 32, 32, 3], labels int64 [10000])`` in file order.

    Raises:
      FileNotFoundError: the file is missing.
      ValueError: the file does not hold exactly 10,000 records of 3,073 bytes, or a
        label byte is above 9.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CIFAR-10 batch file {path!r} is missing; the directory must hold "
            f"{', '.join(TRAIN_FILES)} and {TEST_FILE}."
        )
    expected = RECORDS_PER_FILE * RECORD_BYTES
    size = os.path.getsize(path)
    if size != expected:
        how = "truncated" if size < expected else "too large"
        raise ValueError(
            f"CIFAR-10 batch file {path!r} is {how}: {size} bytes, expected {expected} "
            f"({RECORDS_PER_FILE} records of 1 label byte + {PIXELS_PER_IMAGE} pixel bytes). "
            "Re-extract or re-materialize it."
        )
    records = np.fromfile(path, dtype=np.uint8).reshape(RECORDS_PER_FILE, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise ValueError(
            f"CIFAR-10 batch file {path!r} has label byte {labels[bad[0]]} > 9 in record "
            f"{bad[0]} ({bad.size} bad records in all); it is not a CIFAR-10 batch file "
            "(CIFAR-100's files have two label bytes) or it is corrupt."
        )
    # Records store the R, G and B planes one after the other.
    images = records[:, 1:].reshape(RECORDS_PER_FILE, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_split(folder: str, names: Sequence[str]) -> Split:
    parts = [read_batch_file(os.path.join(folder, name)) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Split(images=images, labels=labels, index=np.arange(len(labels), dtype=np.int64))


def load_binary(directory: str) -> Cifar10:
    """Loads CIFAR-10 from the official binary layout; see :func:`load`."""
    folder = resolve_binary_dir(directory)
    train = _read_split(folder, TRAIN_FILES)
    test = _read_split(folder, [TEST_FILE])
    return Cifar10(
        train=train,
        test=test,
        source=os.path.abspath(folder),
        caveat=binary_copy_caveat(test.images),
    )


# ----------------------------------------------------------------- caveat detection


def _dct_matrix(size: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix, the transform JPEG applies to 8x8 blocks."""
    n = np.arange(size)
    matrix = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


def _high_frequency_magnitude(luma: np.ndarray, starts: Sequence[int]) -> float:
    """Mean |DCT coefficient| of high frequencies (u + v >= 8) over 8x8 blocks at ``starts``."""
    dct = _dct_matrix()
    u, v = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    high = (u + v) >= 8
    total, count = 0.0, 0
    for row in starts:
        for col in starts:
            block = luma[:, row : row + 8, col : col + 8]
            coefficients = dct @ block @ dct.T
            selected = np.abs(coefficients[:, high])
            total += float(selected.sum())
            count += selected.size
    return total / count


def jpeg_grid_score(images: np.ndarray) -> float:
    """How much high-frequency detail a JPEG 8x8 grid removed: ~1.0 none, ~0.4 the JPEG copy.

    JPEG quantizes each aligned 8x8 block's DCT coefficients, zeroing most high
    frequencies inside those blocks; blocks straddling the grid (offset by 4 pixels)
    keep the block-edge discontinuities. Natural images downsampled to 32x32 (the
    official CIFAR-10 pixels) have no such grid, so both block sets carry the same
    high-frequency energy. The score is (aligned inner blocks) / (offset blocks),
    on luma, averaged over the given images.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"expected images [N, 32, 32, 3], got {images.shape}")
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    aligned = _high_frequency_magnitude(luma, starts=(8, 16))  # away from the border
    offset = _high_frequency_magnitude(luma, starts=(4, 12, 20))
    return aligned / max(offset, 1e-12)


def binary_copy_caveat(test_images: np.ndarray) -> str | None:
    """The caveat for a binary copy: a JPEG note if its pixels look JPEG-decoded, else None.

    Why detect rather than look at the files: the offline copy has the same names,
    sizes and layout as the official files by design, and a copy is easily moved
    or renamed, so the only property that travels with it is the pixels
    themselves. :func:`jpeg_grid_score` on 2,000 test images separates the two
    cases by a wide margin (about 0.4 for the JPEG-decoded copy; 1.0 for smooth
    random images; 0.92 for CIFAR JPEG images rescaled off the grid, which still
    carry some JPEG smoothing) and takes well under a second. Not detected: other
    alterations of the pixels, or a JPEG grid not aligned with the image corner.
    """
    score = jpeg_grid_score(test_images[:JPEG_GRID_SAMPLE])
    if score >= JPEG_GRID_THRESHOLD:
        return None
    return (
        "CIFAR-10 pixels look JPEG-decoded (8x8 grid score "
        f"{score:.2f}, official pixels ~1.0): e.g. the offline copy materialized from "
        "JPEG, which differs from the official pixels by ~6/255 on average, so "
        "accuracies sit slightly below those on the official files. Labels and order "
        "are exact."
    )


# --------------------------------------------------------------------------- TFDS


def official_index_from_tfds_id(ids: Sequence[bytes | str], split: str) -> np.ndarray:
    """Parses TFDS cifar10 ``id`` values such as ``'train_16399'`` into official indices.

    TFDS numbers the records in file order (data_batch_1..5, test_batch), so the
    number is the official index.
    """
    prefix = f"{split}_"
    index = np.empty(len(ids), dtype=np.int64)
    for i, raw in enumerate(ids):
        text = raw.decode("ascii") if isinstance(raw, (bytes, np.bytes_)) else str(raw)
        if not text.startswith(prefix) or not text[len(prefix) :].isdigit():
            raise ValueError(
                f"unexpected TFDS cifar10 id {text!r} in split {split!r}: expected "
                f"'{prefix}NNNNN'. Is this the TFDS 'cifar10' dataset?"
            )
        index[i] = int(text[len(prefix) :])
    return index


def split_from_tfds_examples(
    ids: Sequence[bytes | str], images: np.ndarray, labels: np.ndarray, split: str
) -> Split:
    """Sorts one TFDS split (in TFDS's shuffled order) into official order.

    Raises:
      ValueError: the ids are not exactly the official indices 0..N-1, once each.
    """
    images = np.asarray(images, dtype=np.uint8)
    labels = np.asarray(labels).astype(np.int64)
    index = official_index_from_tfds_id(ids, split)
    n = len(index)
    if len(images) != n or len(labels) != n:
        raise ValueError(
            f"TFDS split {split!r}: {n} ids but {len(images)} images and {len(labels)} labels"
        )
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(n)):
        raise ValueError(
            f"TFDS split {split!r}: ids are not the indices 0..{n - 1} exactly once each; "
            "the split is incomplete or duplicated (use the full split, not a slice)"
        )
    return Split(images=np.ascontiguousarray(images[order]), labels=labels[order], index=index[order])


# Where TFDS downloads CIFAR-10 from (its cifar10 builder's URL), and how long a first contact may wait for it.
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)
PROBE_SECONDS = 4.0


def download_host_problem(timeout: float = PROBE_SECONDS) -> str | None:
    """Why TFDS could not download CIFAR-10 (its host, or the HTTPS proxy in the environment, does not answer
    a TCP connection within ``timeout`` seconds), or None. Takes at most about ``timeout`` seconds, where TFDS
    itself retries for minutes."""
    import socket
    import threading
    from urllib.parse import urlsplit

    proxy = os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY")
    host, port = DOWNLOAD_HOST
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 8080
    outcome: dict = {}

    def connect():  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except Exception as error:  # noqa: BLE001  (OSError; anything else is as unreachable)
            outcome["error"] = error

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome.get("ok"):
        return None
    if "error" in outcome:
        return f"cannot connect to {host}:{port} ({outcome['error']})"
    return f"{host}:{port} did not answer within {timeout:g} s"


def offline_hint() -> str:
    """How to give the project an offline CIFAR-10, with the shared data folder's command where it exists."""
    hint = f"give an offline copy (the folder holding {BINARY_FOLDER}/) with --cifar10_dir=DIR or {ENV_VAR}=DIR"
    shared = os.environ.get("TFQ_NOISE_SHARED_DATASETS") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "..", "shared", "datasets")
    script = os.path.join(shared, "cifar10", "materialize.py")
    if os.path.isfile(script):
        shown = os.path.relpath(script)
        shown = shown if not shown.startswith(os.path.join("..", "..")) else os.path.abspath(script)
        hint += f"; `python {shown} DIR` writes one from the shared data folder"
    return hint


def load_tfds(data_dir: str | None = None) -> Cifar10:
    """Loads CIFAR-10 through TFDS (downloads if needed) and sorts it into official order.

    Where TFDS has not prepared it yet, its download host is probed first (:func:`download_host_problem`):
    offline, this fails in seconds with how to give an offline copy.
    """
    import tensorflow_datasets as tfds  # heavy; only needed on this path

    try:
        prepared = tfds.builder("cifar10", data_dir=data_dir).is_prepared()
    except Exception:  # noqa: BLE001  (an unreadable data_dir: let tfds.load say why)
        prepared = False
    problem = None if prepared else download_host_problem()
    if problem:
        raise RuntimeError(f"CIFAR-10 is not in TFDS's data folder and TFDS cannot download it: {problem}. "
                           f"Offline? {offline_hint()}")
    try:
        datasets = tfds.load("cifar10", split=["train", "test"], data_dir=data_dir, batch_size=-1)
    except Exception as error:  # TFDS raises many kinds; all mean "not available"
        raise RuntimeError(
            f"TFDS could not load 'cifar10' (data_dir={data_dir!r}): {' '.join(str(error).split())[:400]}. "
            f"Offline? {offline_hint()}"
        ) from error
    splits = []
    for name, dataset in zip(("train", "test"), datasets):
        arrays = tfds.as_numpy(dataset)
        splits.append(split_from_tfds_examples(arrays["id"], arrays["image"], arrays["label"], name))
    train, test = splits
    for split, expected in ((train, NUM_TRAIN), (test, NUM_TEST)):
        if len(split) != expected:
            raise ValueError(
                f"TFDS cifar10 gave {len(split)} examples where {expected} were expected"
            )
    return Cifar10(train=train, test=test, source="tfds", caveat=None)


# --------------------------------------------------------------------- a run's data: --dataset=cifar10


def prepare(config, paths: base.DataPaths) -> base.RunData:
    """CIFAR-10 with synthetic noise (seeded) or CIFAR-10N's human labels (``--cifar10n_path``)."""
    base.options(config, {})  # takes no dataset_kwargs
    data = load(paths.cifar10_dir, paths.tfds_data_dir)
    train_idx, val_idx, subset = base.subset_and_split(len(data.train), config.train_size, config.validation_fraction)
    human = None
    if config.noise_type in cifar10n.NOISE_TYPES:
        path = paths.cifar10n_path or os.environ.get("TFQ_NOISE_CIFAR10N_PATH")
        if not path:
            raise ValueError(
                f"noise_type {config.noise_type!r} needs CIFAR-10N's CIFAR-10_human.pt: pass --cifar10n_path "
                "or set TFQ_NOISE_CIFAR10N_PATH"
            )
        human = {k: v[subset] for k, v in cifar10n.load_human_labels(path).items()}
    rate = None if human is not None else config.noise_rate
    noisy = noise.make_noisy_labels(
        config.noise_type, data.train.labels[subset], rate, config.seed, NUM_CLASSES, human
    )
    # Positions of the train / validation examples inside ``subset``.
    position = {index: i for i, index in enumerate(subset)}
    t = np.array([position[i] for i in train_idx], dtype=np.int64)
    v = np.array([position[i] for i in val_idx], dtype=np.int64)
    val_labels = noisy.noisy[v] if config.validation_labels == "noisy" else noisy.clean[v]
    train_images = data.train.images[train_idx]
    mean, std = channel_stats(train_images)
    return base.RunData(
        task=ClassificationTask(NUM_CLASSES),
        train_images=train_images,
        train_labels=noisy.noisy[t],
        train_clean_labels=noisy.clean[t],
        train_corrupted=noisy.corrupted_mask[t],
        val_images=data.train.images[val_idx],
        val_labels=val_labels,
        test_images=data.test.images,
        test_labels=data.test.labels,
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        train_index=train_idx,
        val_index=val_idx,
        info={
            "source": data.source,
            "caveat": data.caveat,
            "train_examples": int(len(t)),
            "validation_examples": int(len(v)),
            "test_examples": int(len(data.test)),
            "realized_flip_rate": float(noisy.realized_flip_rate),
            "train_flip_rate": float(np.mean(noisy.corrupted_mask[t])),
        },
    )

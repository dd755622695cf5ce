"""Ranks a run's training examples by how likely their given label is wrong, from its predictions.npz.

    python -m experiments.find_label_errors --run_dir=results/cpu_cifar10/<run>
    python -m experiments.find_label_errors --run_dir=results/<folder experiment>/<run> [--folder_path=DIR]
    python -m experiments.find_label_errors --run_dirs=F0,F1,F2,F3,F4 --split=val --output_dir=results/label_errors

Two scorers, on the probabilities p of the final model(s):

* ``cleanlab``: :func:`tfq_noise.label_errors.find_label_errors` (``cleanlab.filter.find_label_issues(labels,
  pred_probs, return_indices_ranked_by="self_confidence")``, confident learning); its flagged examples, in the
  library's order, come first in the ranking;
* ``disagreement``: score 1 - p(given label); flagged where the predicted class differs from the given label.

``--split=train`` reads a run's training examples (in-sample: the model was fitted on those labels);
``--split=val`` its validation examples (out-of-sample). Several runs are assembled by dataset index
(``<split>_index``): with ``--combine=disjoint`` (default) each example comes from exactly one run, so K runs whose
validation splits are K disjoint folds give out-of-sample probabilities for every example (clean labels are then
taken from the runs' training arrays holding the same index); ``--combine=mean`` averages shared examples.

Writes into ``--output_dir`` (default: the run dir), atomically: ``label_errors.csv`` (``--gzip``: ``.csv.gz``;
one row per example, best suspect first, with class names and, for ``--dataset=folder`` runs, each image's file;
``--rows=flagged``: the examples either scorer flags), ``label_errors.png`` (the top suspects, from CIFAR-10 or a
folder run's own files; ``--images=auto`` draws it where the images are at hand and says why not otherwise) and
``label_errors.json``. Where clean labels are known (CIFAR-10 synthetic noise, CIFAR-10N, a CSV with
``clean_label``), each scorer's flags are measured against them (given != clean): precision, recall, F1 and the
average precision of its ranking; synthetic noise over a folder without clean labels is measured against its
flips only. Without either, nothing is measured: the flags are suspects to review.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from pathlib import Path

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
from tfq_noise import label_errors, results
from tfq_noise.label_errors import average_precision, flag_metrics
from tfq_noise.data import cifar10

CSV_NAME, PNG_NAME, JSON_NAME = "label_errors.csv", "label_errors.png", "label_errors.json"
SPLITS = ("train", "val")
COMBINE = ("disjoint", "mean")
ROWS = ("all", "flagged")
CLEANLAB_FILTERS = label_errors.FILTERS
SAME_SETTING = ("dataset", "noise_type", "noise_rate", "seed", "train_size")  # runs combined must agree on these
PROB_TOLERANCE = label_errors.PROB_TOLERANCE
TOP_PRINTED = 10  # suspects printed where no ground truth is known


class InputError(ValueError):
    """A run or flag that cannot be used; the message says why."""


@dataclasses.dataclass
class Examples:
    index: np.ndarray  # int64 [N], positions in the dataset's official training set
    probs: np.ndarray  # float64 [N, C], rows summing to 1
    labels: np.ndarray  # int64 [N], the given (noisy) labels
    clean: np.ndarray | None  # int64 [N] where every example's clean label is known, else None
    runs: np.ndarray  # int64 [N], how many runs' probabilities were averaged
    clean_known: int = 0  # examples whose clean label is known
    paths: list[str] | None = None  # the image file of each example (--dataset=folder runs)
    truth: str | None = None  # what the truth is, where known: "clean labels" or "synthetic flips only"


def _read(run_dir: Path) -> tuple[dict, dict, dict]:
    """A run's config, predictions and the ``data`` of its provenance (empty dicts where absent)."""
    if not run_dir.is_dir():
        raise InputError(f"no run directory at {run_dir}")
    path = run_dir / results.PREDICTIONS
    if not path.is_file():
        raise InputError(f"{run_dir} has no {results.PREDICTIONS}: the run predates it (or has not finished); train "
                         "it again (move its folder away and run its grid again with python -m experiments.run)")
    try:
        arrays = results.read_npz(path)
    except Exception as error:  # noqa: BLE001  (zipfile, zlib, EOF, OS and numpy errors: not a readable .npz)
        if "Object arrays" in str(error):
            raise InputError(f"{path} holds object arrays (pickles), which are refused (allow_pickle=False); it "
                             "was not written by this project") from None
        raise InputError(f"{path} is damaged ({type(error).__name__}: {error})") from None
    found = []
    for name in (results.CONFIG, "provenance.json"):
        try:
            found.append(results.read_json(run_dir / name) if (run_dir / name).is_file() else {})
        except results.DamagedFile as error:
            raise InputError(str(error)) from None
    config, provenance = found
    data_info = provenance.get("data") if isinstance(provenance.get("data"), dict) else {}
    return config, arrays, data_info


def _truth_kind(config: dict, data_info: dict) -> str | None:
    """What ``train_clean_labels`` of a run are: the clean labels, the given ones (no truth) plus synthetic flips."""
    if data_info.get("clean_labels_given") is not False:
        return "clean labels"
    if config.get("noise_type") not in (None, "original") and (config.get("noise_rate") or 0) > 0:
        return "synthetic flips only (the dataset gives no clean labels; its own labels count as right)"
    return None


def _integers(arrays: dict, key: str, n: int, path: Path) -> np.ndarray:
    value = arrays[key]
    if value.ndim != 1 or len(value) != n:
        raise InputError(f"{path}: {key} has shape {value.shape}, expected ({n},) (mismatched shapes)")
    if value.dtype.kind not in "iu":
        raise InputError(f"{path}: {key} must hold integers, not {value.dtype}")
    return value.astype(np.int64)


def check_split(arrays: dict, split: str, path: Path) -> dict:
    """The probabilities, labels and index of ``split`` in a predictions.npz, checked."""
    for key in ("probs", "labels", "index"):
        if f"{split}_{key}" not in arrays:
            raise InputError(f"{path} has no {split}_{key}" + (" (the run has no validation split)"
                                                              if split == "val" and key == "probs" else ""))
    probs = arrays[f"{split}_probs"]
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2 or probs.dtype.kind != "f":
        raise InputError(f"{path}: {split}_probs must be float [N, C] with N >= 1 and C >= 2, got {probs.dtype} "
                         f"{probs.shape}")
    n, c = probs.shape
    if arrays[f"{split}_labels"].ndim != 1:
        raise InputError(f"{path}: {split}_labels has shape {arrays[f'{split}_labels'].shape}: multi-label runs "
                         "(FER+, BP4D) are not supported")
    out = {key: _integers(arrays, f"{split}_{key}", n, path) for key in ("index", "labels")}
    probs = probs.astype(np.float64)
    sums = probs.sum(axis=1)
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or np.max(np.abs(sums - 1)) > PROB_TOLERANCE:
        raise InputError(f"{path}: {split}_probs are not class probabilities (finite, >= 0, rows summing to 1)")
    out["probs"] = probs / sums[:, None]
    for key in ("labels",) + (("clean",) if f"{split}_clean_labels" in arrays else ()):
        values = out[key] if key == "labels" else _integers(arrays, f"{split}_clean_labels", n, path)
        if values.min() < 0 or values.max() >= c:
            raise InputError(f"{path}: {split}_{key} outside 0..{c - 1}")
        out[key] = values
    if out["index"].min() < 0 or len(np.unique(out["index"])) != n:
        raise InputError(f"{path}: {split}_index must hold distinct non-negative positions")
    if f"{split}_corrupted" in arrays:
        corrupted = arrays[f"{split}_corrupted"]
        if corrupted.shape != (n,) or corrupted.dtype != bool:
            raise InputError(f"{path}: {split}_corrupted must be bool ({n},), got {corrupted.dtype} {corrupted.shape}")
        if "clean" in out and not np.array_equal(corrupted, out["labels"] != out["clean"]):
            raise InputError(f"{path}: {split}_corrupted disagrees with {split}_labels != {split}_clean_labels")
    return out


def _label_table(records: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dataset index, given label, clean label or -1) for every index in ``records``, which must agree."""
    index = np.concatenate([r[0] for r in records])
    given = np.concatenate([r[1] for r in records])
    clean = np.concatenate([r[2] if r[2] is not None else np.full(len(r[0]), -1) for r in records])
    unique, inverse = np.unique(index, return_inverse=True)
    table_given, table_clean = np.full(len(unique), -1), np.full(len(unique), -1)
    table_given[inverse] = given
    known = clean >= 0
    table_clean[inverse[known]] = clean[known]
    if np.any(table_given[inverse] != given) or np.any(table_clean[inverse[known]] != clean[known]):
        raise InputError("the runs disagree on the labels of some examples: they were not trained on the same noisy "
                         "labels")
    return unique, table_given, table_clean


def load_examples(run_dirs: list[Path], split: str = "train", combine: str = "disjoint",
                  folder_path: str | None = None) -> tuple[Examples, list]:
    """Reads and checks every run, then assembles their examples by dataset index (and, for ``--dataset=folder``
    runs, finds each example's image file)."""
    runs, parts, records, files, truths = [], [], [], {}, set()
    for run_dir in run_dirs:
        config, arrays, data_info = _read(run_dir)
        path = run_dir / results.PREDICTIONS
        if split == "val" and config.get("validation_labels") == "clean":
            raise InputError(f"{run_dir}: its validation labels are the clean ones (validation_labels=clean), "
                             "not noisy labels to check")
        truth = _truth_kind(config, data_info)
        truths.add(truth)
        part = check_split(arrays, split, path)
        if config.get("dataset") == "folder":
            try:
                found = label_errors.folder_run_files(config.get("dataset_kwargs") or {}, data_info, part["index"],
                                                      part.get("clean"), folder_path)
            except (ValueError, OSError) as error:
                raise InputError(f"{run_dir}: {error}") from None
            files.update(zip(part["index"].tolist(), found))
        records.append((part["index"], part["labels"], part.get("clean") if truth else None))
        if split != "train" and all(f"train_{k}" in arrays for k in ("probs", "labels", "clean_labels", "index")):
            train = check_split(arrays, "train", path)  # clean labels of examples other runs hold out
            records.append((train["index"], train["labels"], train["clean"] if truth else None))
        parts.append(part)
        runs.append({"run_dir": str(run_dir), "examples": len(part["index"]),
                     **{k: config.get(k) for k in ("dataset", "method", "noise_type", "noise_rate", "seed",
                                                   "train_size", "validation_labels")},
                     "classes": data_info.get("classes"), "data_source": data_info.get("source"),
                     "image_size": data_info.get("image_size"), "channels": data_info.get("channels")})
    for key in SAME_SETTING:
        values = {repr(run[key]) for run in runs if run[key] is not None}
        if len(values) > 1:
            raise InputError(f"the runs differ in {key} ({', '.join(sorted(values))}): they cannot be combined")
    if len({p["probs"].shape[1] for p in parts}) > 1:
        raise InputError("the runs have different numbers of classes (mismatched shapes)")
    index = np.concatenate([p["index"] for p in parts])
    unique, counts = np.unique(index, return_counts=True)
    if combine == "disjoint" and np.any(counts > 1):
        raise InputError(f"{int(np.sum(counts > 1))} examples (e.g. {int(unique[counts > 1][0])}) come from several "
                         "runs; pass --combine=mean to average their probabilities")
    table_index, table_given, table_clean = _label_table(records)
    position = np.searchsorted(unique, index)
    probs = np.zeros((len(unique), parts[0]["probs"].shape[1]))
    np.add.at(probs, position, np.concatenate([p["probs"] for p in parts]))
    probs /= counts[:, None]
    rows = np.searchsorted(table_index, unique)
    clean = table_clean[rows]
    examples = Examples(unique, probs, table_given[rows], None, counts.astype(np.int64))
    examples.clean_known = int(np.sum(clean >= 0))
    examples.clean = clean if examples.clean_known == len(unique) else None
    examples.truth = next(iter(truths)) if examples.clean is not None and len(truths) == 1 else (
        "clean labels" if examples.clean is not None else None)
    if files:
        examples.paths = [files[i] for i in unique.tolist()]
    return examples, runs


def find_issues(examples: Examples, filter_by: str = "prune_by_noise_rate") -> dict:
    """Both scorers on ``examples``; positions are rows of ``examples``."""
    try:
        found = label_errors.find_label_errors(examples.labels, examples.probs, filter_by=filter_by,
                                               ties=examples.index)
    except ValueError as error:
        raise InputError(str(error)) from None
    flagged_cleanlab = found.is_flagged
    score = found.scores
    return {"p_given": found.p_given, "predicted": found.predicted, "score": score,
            "cleanlab_ranked": found.indices, "cleanlab_rank": found.rank, "order": found.order,
            "cleanlab_version": found.cleanlab_version,
            "flagged": {"cleanlab": flagged_cleanlab, "disagreement": found.predicted != examples.labels},
            # What each scorer ranks by: cleanlab's flags first (in its order), then the rest by score.
            "ranking_score": {"cleanlab": score + flagged_cleanlab, "disagreement": score}}


def class_names(dataset, num_classes: int, given=None) -> list[str]:
    """The class names: ``given`` (a run's provenance lists them for folder and TFDS data), CIFAR-10's, or the
    class ids as text."""
    if given and len(given) == num_classes:
        return [str(c) for c in given]
    cifar = dataset in (None, "cifar10") and num_classes == cifar10.NUM_CLASSES
    return list(cifar10.CLASS_NAMES) if cifar else [str(c) for c in range(num_classes)]


def image_grid(images, tiles: list[dict], path: Path, columns: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(tiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.5 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, tile in zip(axes.flat, images, tiles):
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        name = f"idx {tile['index']}" if not tile.get("path") else Path(tile["path"]).name[-22:]
        lines = [f"#{tile['rank']} {name}", f"given: {tile['given']}", f"pred: {tile['predicted']}"]
        color = "black"
        if tile.get("clean") is not None:
            lines.append(f"clean: {tile['clean']}")
            color = "tab:red" if tile["clean"] != tile["given"] else "tab:green"
        ax.set_title("\n".join(lines), fontsize=7, color=color)
    fig.suptitle("Suspected label errors, most suspect first (red: label truly wrong, green: truly right)"
                 if tiles and tiles[0].get("clean") is not None else "Suspected label errors, most suspect first",
                 fontsize=9)
    results.atomic_save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)


IMAGES_CHOICES = {"true": "true", "1": "true", "yes": "true", "false": "false", "0": "false", "no": "false",
                  "auto": "auto"}


def _images_flag(text: str) -> str:
    if str(text).lower() not in IMAGES_CHOICES:
        raise argparse.ArgumentTypeError(f"expected true, false or auto, got {text!r}")
    return IMAGES_CHOICES[str(text).lower()]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv):
    parser = _Parser(prog="python -m experiments.find_label_errors", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_dir", help="a finished run's folder (holding predictions.npz)")
    source.add_argument("--run_dirs", help="several runs' folders, comma-separated, assembled by dataset index")
    parser.add_argument("--split", choices=SPLITS, default="train",
                        help="the examples to check: each run's training examples (in-sample) or its validation "
                             "examples (out-of-sample; folds)")
    parser.add_argument("--combine", choices=COMBINE, default="disjoint",
                        help="an example from several runs: an error (disjoint) or their probabilities averaged")
    parser.add_argument("--output_dir", help="where the outputs go (default: --run_dir; required with --run_dirs)")
    parser.add_argument("--rows", choices=ROWS, default="all",
                        help="the CSV's rows: every example (default), or those either scorer flags")
    parser.add_argument("--gzip", action="store_true", help=f"write the CSV gzip-compressed ({CSV_NAME}.gz)")
    parser.add_argument("--images", type=_images_flag, nargs="?", const="true", default="auto",
                        help="the image grid of the top suspects: auto draws it where the images are at hand "
                             "(CIFAR-10, a folder run's files) and says why not otherwise (default); true "
                             "requires it")
    parser.add_argument("--top", type=int, default=36, help="suspects in the image grid (default 36)")
    parser.add_argument("--cifar10_dir", help="CIFAR-10 in the official binary layout (default: "
                                              "$TFQ_NOISE_CIFAR10_DIR, else TFDS)")
    parser.add_argument("--tfds_data_dir", help="TFDS data_dir")
    parser.add_argument("--folder_path", help="--dataset=folder runs: the folder or CSV they trained on (default: "
                                              "the one their provenance.json records)")
    parser.add_argument("--cleanlab_filter_by", choices=CLEANLAB_FILTERS, default="prune_by_noise_rate",
                        help="cleanlab's filter_by (its own default: prune_by_noise_rate)")
    args = parser.parse_args(argv)
    if args.run_dirs is not None and not args.output_dir:
        parser.error("--run_dirs needs --output_dir")
    if args.top < 1:
        parser.error("--top must be >= 1")
    return args


def load_images(examples: Examples, order: np.ndarray, run: dict, cifar10_dir=None, tfds_data_dir=None):
    """The images of the examples at ``order`` (the top suspects): CIFAR-10's, or a folder run's own files at the
    run's size and channels. InputError saying why where they cannot be had."""
    dataset = run.get("dataset")
    if examples.paths is not None:
        from tfq_noise.data import folder

        size, channels = int(run.get("image_size") or 32), int(run.get("channels") or 3)
        try:
            return np.stack([folder.decode_image(examples.paths[j], size, channels) for j in order.tolist()])
        except ValueError as error:
            raise InputError(f"cannot draw the image grid: {error}") from None
    if dataset not in (None, "cifar10"):
        raise InputError(f"the image grid reads CIFAR-10 and folder runs' images, not {dataset}'s")
    try:
        data = cifar10.load(cifar10_dir, tfds_data_dir)
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"cannot load CIFAR-10 for the image grid ({error}); pass --cifar10_dir") from None
    index = examples.index[order]
    if index.max() >= len(data.train):
        raise InputError(f"dataset index {int(index.max())} is beyond CIFAR-10's training set")
    return data.train.images[index]


def tabulate(examples: Examples, found: dict, names: list[str], several_runs: bool) -> tuple[list[dict], dict, dict]:
    """The CSV rows (best suspect first), and each scorer's flags measured against the truth where it is known."""
    truth = None if examples.clean is None else examples.labels != examples.clean
    rows = []
    for rank, j in enumerate(found["order"].tolist(), 1):
        given, predicted = int(examples.labels[j]), int(found["predicted"][j])
        row = {"rank": rank, "index": int(examples.index[j])}
        if examples.paths is not None:
            row["path"] = examples.paths[j]
        row.update({"given_label": given, "given_class": names[given],
                    "predicted_label": predicted, "predicted_class": names[predicted],
                    "p_given": round(float(found["p_given"][j]), 6), "score": round(float(found["score"][j]), 6),
                    "flagged_cleanlab": int(found["flagged"]["cleanlab"][j]),
                    "flagged_disagreement": int(found["flagged"]["disagreement"][j]),
                    "cleanlab_rank": int(found["cleanlab_rank"][j]) or ""})
        if truth is not None:
            clean = int(examples.clean[j])
            row.update(clean_label=clean, clean_class=names[clean], corrupted=int(truth[j]))
        if several_runs:
            row["runs"] = int(examples.runs[j])
        rows.append(row)
    scorers = {}
    for name in ("cleanlab", "disagreement"):
        scorers[name] = {"flagged": int(found["flagged"][name].sum())}
        if truth is not None:
            scorers[name].update(flag_metrics(found["flagged"][name], truth),
                                 average_precision=average_precision(found["ranking_score"][name], truth))
    truth_summary = {"clean_labels_known": examples.clean_known, "truth_known": truth is not None,
                     "truth": examples.truth if truth is not None else
                     "none: the labels given are all there is (no clean labels, no synthetic noise)",
                     "corrupted": None if truth is None else int(truth.sum()),
                     "corrupted_rate": None if truth is None else float(truth.mean())}
    return rows, scorers, truth_summary


def write_csv(path: Path, rows: list[dict]) -> None:
    """``results.write_csv``, gzip-compressed (reproducibly: no name or time in the header) for a ``.gz`` path."""
    if path.suffix != ".gz":
        return results.write_csv(path, rows)
    import csv
    import gzip

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
            text.flush()
            text.detach()

    results.atomic_write(path, write, suffix=".gz")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _grid(args, examples: Examples, found: dict, run: dict):
    """The top suspects' images, or None and why not (``--images=auto``); InputError with ``--images=true``."""
    if args.images == "false":
        return None, None
    try:
        return load_images(examples, found["order"][:args.top], run, args.cifar10_dir, args.tfds_data_dir), None
    except InputError as error:
        if args.images == "true":
            raise
        return None, str(error)


def _report(rows: list[dict], runs: list, args, summary: dict, scorers: dict, truth: dict, examples: Examples,
            output_dir: Path, skipped: str | None) -> None:
    print(f"{len(rows)} examples from {len(runs)} run(s), {args.split} split "
          f"({'in-sample' if args.split == 'train' else 'out-of-sample'}); model accuracy on the given labels "
          f"{summary['accuracy_on_given_labels']:.3f}")
    if truth["truth_known"]:
        print(f"{'scorer':<14}{'flagged':>8}{'precision':>11}{'recall':>8}{'F1':>8}{'avg prec':>10}")
        for name, entry in scorers.items():
            print(f"{name:<14}{entry['flagged']:>8}{_fmt(entry.get('precision')):>11}{_fmt(entry.get('recall')):>8}"
                  f"{_fmt(entry.get('f1')):>8}{_fmt(entry.get('average_precision')):>10}")
        print(f"truly mislabeled: {truth['corrupted']} of {len(rows)} ({truth['corrupted_rate']:.1%}: the precision "
              f"and average precision of a random ranking); truth: {truth['truth']}")
    else:
        print("no ground truth is known (" + (
            f"clean labels known for {examples.clean_known} of {len(rows)} examples" if examples.clean_known else
            "the dataset gives no clean labels") + "): nothing is measured; the flags are suspects to review, "
              "most suspect first (score = 1 - p(given label))")
        print(", ".join(f"{name} flags {entry['flagged']}" for name, entry in scorers.items()))
        for row in rows[:TOP_PRINTED]:
            where = row.get("path", f"index {row['index']}")
            print(f"  #{row['rank']} {where}: given {row['given_class']}, predicted {row['predicted_class']}, "
                  f"score {row['score']:.3f}{' (cleanlab flag)' if row['flagged_cleanlab'] else ''}")
    if skipped:
        print(f"no image grid: {skipped}")
    print(f"wrote {', '.join(str(output_dir / name) for name in summary['outputs'])}")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_dirs = [Path(args.run_dir)] if args.run_dir else [Path(d) for d in args.run_dirs.split(",") if d.strip()]
    try:
        if not run_dirs or len(set(map(str, run_dirs))) != len(run_dirs):
            raise InputError("--run_dirs must name at least one run, each once")
        examples, runs = load_examples(run_dirs, args.split, args.combine, args.folder_path)
        found = find_issues(examples, args.cleanlab_filter_by)
        images, skipped = _grid(args, examples, found, runs[0])
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    names = class_names(runs[0]["dataset"], examples.probs.shape[1], runs[0].get("classes"))
    rows, scorers, truth = tabulate(examples, found, names, len(runs) > 1)
    scorers["cleanlab"].update(call="cleanlab.filter.find_label_issues(labels, pred_probs, return_indices_ranked_by="
                                    f"'self_confidence', filter_by='{args.cleanlab_filter_by}')",
                               version=found["cleanlab_version"],
                               ranking="flagged examples in the library's order, then the rest by score")
    scorers["disagreement"].update(ranking="score = 1 - p(given label); flagged where argmax p != given label")
    csv_name = CSV_NAME + (".gz" if args.gzip else "")
    top_keys = ("index",) + (("path",) if examples.paths is not None else ()) + (
        "given_class", "predicted_class", "score")
    written = rows if args.rows == "all" else [r for r in rows if r["flagged_cleanlab"] or r["flagged_disagreement"]]
    summary = {"runs": runs, "split": args.split, "combine": args.combine, "in_sample": args.split == "train",
               "examples": len(rows), "classes": int(examples.probs.shape[1]), "class_names": names,
               "shared_examples": int(np.sum(examples.runs > 1)),
               "accuracy_on_given_labels": float(np.mean(found["predicted"] == examples.labels)),
               **truth, "scorers": scorers, "top": [{k: r[k] for k in top_keys} for r in rows[:20]],
               "csv_rows": "every example" if args.rows == "all" else
               f"the {len(written)} examples either scorer flags (--rows=flagged)",
               "image_grid": None if images is None else f"the top {len(images)} suspects",
               "outputs": [csv_name, JSON_NAME] + ([PNG_NAME] if images is not None else [])}
    output_dir = Path(args.output_dir) if args.output_dir else run_dirs[0]
    try:
        if images is not None:
            image_grid(images, [{"rank": r["rank"], "index": r["index"], "path": r.get("path"),
                                 "given": r["given_class"], "predicted": r["predicted_class"],
                                 "clean": r.get("clean_class")} for r in rows[:args.top]], output_dir / PNG_NAME)
        write_csv(output_dir / csv_name, written)
        results.write_json(output_dir / JSON_NAME, summary)  # last: its presence means the outputs are complete
    except OSError as error:
        print(f"error: cannot write to {output_dir}: {error}", file=sys.stderr)
        return 2
    _report(rows, runs, args, summary, scorers, truth, examples, output_dir, skipped)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every output is written atomically: none is half-written
        sys.exit(print("error: interrupted; outputs not yet written were not written", file=sys.stderr) or 130)

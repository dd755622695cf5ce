"""Ranks a run's training examples by how likely their given label is wrong, from its predictions.npz.

    python -m experiments.find_label_errors --run_dir=results/cpu_cifar10/<run>
    python -m experiments.find_label_errors --run_dir=results/cpu_cifar10/<run> --images=false
    python -m experiments.find_label_errors --run_dirs=F0,F1,F2,F3,F4 --split=val --output_dir=results/label_errors

Two scorers, on the probabilities p of the final model(s):

* ``cleanlab``: ``cleanlab.filter.find_label_issues(labels, pred_probs,
  return_indices_ranked_by="self_confidence")`` (confident learning); its flagged examples, in the library's
  order, come first in the ranking;
* ``disagreement``: score 1 - p(given label); flagged where the predicted class differs from the given label.

``--split=train`` reads a run's training examples (in-sample: the model was fitted on those labels);
``--split=val`` its validation examples (out-of-sample). Several runs are assembled by dataset index
(``<split>_index``): with ``--combine=disjoint`` (default) each example comes from exactly one run, so K runs whose
validation splits are K disjoint folds give out-of-sample probabilities for every example (clean labels are then
taken from the runs' training arrays holding the same index); ``--combine=mean`` averages shared examples.

Writes into ``--output_dir`` (default: the run dir), atomically: ``label_errors.csv`` (one row per example,
best suspect first), ``label_errors.png`` (the top suspects with their given and predicted classes; CIFAR-10
only; ``--images=false`` skips it) and ``label_errors.json`` (the summary). Where clean labels are known
(CIFAR-10 synthetic noise, CIFAR-10N), each scorer's flags are measured against the truth (given != clean):
precision, recall, F1, and the average precision (area under the precision-recall curve) of its ranking.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
from tfq_noise import results
from tfq_noise.data import cifar10

CSV_NAME, PNG_NAME, JSON_NAME = "label_errors.csv", "label_errors.png", "label_errors.json"
SPLITS = ("train", "val")
COMBINE = ("disjoint", "mean")
CLEANLAB_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                    "low_normalized_margin", "low_self_confidence")
SAME_SETTING = ("dataset", "noise_type", "noise_rate", "seed", "train_size")  # runs combined must agree on these
PROB_TOLERANCE = 0.02  # float16 rows sum to 1 within rounding


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


def _read(run_dir: Path) -> tuple[dict, dict]:
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
    config = {}
    if (run_dir / results.CONFIG).is_file():
        try:
            config = results.read_json(run_dir / results.CONFIG)
        except results.DamagedFile as error:
            raise InputError(str(error)) from None
    return config, arrays


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


def load_examples(run_dirs: list[Path], split: str = "train", combine: str = "disjoint") -> tuple[Examples, list]:
    """Reads and checks every run, then assembles their examples by dataset index."""
    runs, parts, records = [], [], []
    for run_dir in run_dirs:
        config, arrays = _read(run_dir)
        path = run_dir / results.PREDICTIONS
        if split == "val" and config.get("validation_labels") == "clean":
            raise InputError(f"{run_dir}: its validation labels are the clean ones (validation_labels=clean), "
                             "not noisy labels to check")
        part = check_split(arrays, split, path)
        records.append((part["index"], part["labels"], part.get("clean")))
        if split != "train" and all(f"train_{k}" in arrays for k in ("probs", "labels", "clean_labels", "index")):
            train = check_split(arrays, "train", path)  # clean labels of examples other runs hold out
            records.append((train["index"], train["labels"], train["clean"]))
        parts.append(part)
        runs.append({"run_dir": str(run_dir), "examples": len(part["index"]),
                     **{k: config.get(k) for k in ("dataset", "method", "noise_type", "noise_rate", "seed",
                                                   "train_size", "validation_labels")}})
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
    return examples, runs


def find_issues(examples: Examples, filter_by: str = "prune_by_noise_rate") -> dict:
    """Both scorers on ``examples``; positions are rows of ``examples``."""
    import cleanlab
    import cleanlab.filter

    rows = np.arange(len(examples.labels))
    p_given = examples.probs[rows, examples.labels]
    predicted = examples.probs.argmax(axis=1)
    score = 1.0 - p_given
    try:
        ranked = np.asarray(cleanlab.filter.find_label_issues(
            examples.labels, examples.probs, return_indices_ranked_by="self_confidence", filter_by=filter_by,
            n_jobs=1), dtype=np.int64)
    except (ValueError, AssertionError, TypeError) as error:
        raise InputError(f"cleanlab.filter.find_label_issues refused the data: {error}") from None
    flagged_cleanlab = np.zeros(len(rows), bool)
    flagged_cleanlab[ranked] = True
    cleanlab_rank = np.zeros(len(rows), np.int64)  # 1-based position in cleanlab's list, 0 if not flagged
    cleanlab_rank[ranked] = np.arange(1, len(ranked) + 1)
    by_score = np.lexsort((examples.index, -score))  # highest score first, ties by dataset index
    order = np.concatenate([ranked, by_score[~flagged_cleanlab[by_score]]])
    return {"p_given": p_given, "predicted": predicted, "score": score, "cleanlab_ranked": ranked,
            "cleanlab_rank": cleanlab_rank, "order": order, "cleanlab_version": cleanlab.__version__,
            "flagged": {"cleanlab": flagged_cleanlab, "disagreement": predicted != examples.labels},
            # What each scorer ranks by: cleanlab's flags first (in its order), then the rest by score.
            "ranking_score": {"cleanlab": score + flagged_cleanlab, "disagreement": score}}


def flag_metrics(flagged: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of a flagged set against the truly mislabeled examples (None where undefined)."""
    flagged, truth = np.asarray(flagged, bool), np.asarray(truth, bool)
    hits = int(np.sum(flagged & truth))
    precision = hits / int(flagged.sum()) if flagged.any() else None
    recall = hits / int(truth.sum()) if truth.any() else None
    f1 = None if precision is None or recall is None else (
        0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return {"flagged": int(flagged.sum()), "true_positives": hits, "precision": precision, "recall": recall, "f1": f1}


def average_precision(score: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the precision-recall curve of ``score`` (higher: more suspect); None without positives."""
    from sklearn.metrics import average_precision_score

    truth = np.asarray(truth, bool)
    return float(average_precision_score(truth, score)) if truth.any() else None


def class_names(dataset, num_classes: int) -> list[str]:
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
        ax.imshow(image, interpolation="nearest")
        lines = [f"#{tile['rank']} idx {tile['index']}", f"given: {tile['given']}", f"pred: {tile['predicted']}"]
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


def _bool(text: str) -> bool:
    if str(text).lower() not in ("true", "1", "yes", "false", "0", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return str(text).lower() in ("true", "1", "yes")


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
    parser.add_argument("--images", type=_bool, nargs="?", const=True, default=True,
                        help="write the image grid of the top suspects (CIFAR-10 images needed; default true)")
    parser.add_argument("--top", type=int, default=36, help="suspects in the image grid (default 36)")
    parser.add_argument("--cifar10_dir", help="CIFAR-10 in the official binary layout (default: "
                                              "$TFQ_NOISE_CIFAR10_DIR, else TFDS)")
    parser.add_argument("--tfds_data_dir", help="TFDS data_dir")
    parser.add_argument("--cleanlab_filter_by", choices=CLEANLAB_FILTERS, default="prune_by_noise_rate",
                        help="cleanlab's filter_by (default: its own default, prune_by_noise_rate)")
    args = parser.parse_args(argv)
    if args.run_dirs is not None and not args.output_dir:
        parser.error("--run_dirs needs --output_dir")
    if args.top < 1:
        parser.error("--top must be >= 1")
    return args


def load_images(examples: Examples, order: np.ndarray, dataset, cifar10_dir=None, tfds_data_dir=None):
    """The CIFAR-10 training images of the examples at ``order`` (the top suspects)."""
    if dataset not in (None, "cifar10"):
        raise InputError(f"the image grid needs CIFAR-10 images, not {dataset}'s; pass --images=false")
    try:
        data = cifar10.load(cifar10_dir, tfds_data_dir)
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"cannot load CIFAR-10 for the image grid ({error}); pass --images=false to skip it") from None
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
        row = {"rank": rank, "index": int(examples.index[j]), "given_label": given, "given_class": names[given],
               "predicted_label": predicted, "predicted_class": names[predicted],
               "p_given": round(float(found["p_given"][j]), 6), "score": round(float(found["score"][j]), 6),
               "flagged_cleanlab": int(found["flagged"]["cleanlab"][j]),
               "flagged_disagreement": int(found["flagged"]["disagreement"][j]),
               "cleanlab_rank": int(found["cleanlab_rank"][j]) or ""}
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
                     "corrupted": None if truth is None else int(truth.sum()),
                     "corrupted_rate": None if truth is None else float(truth.mean())}
    return rows, scorers, truth_summary


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_dirs = [Path(args.run_dir)] if args.run_dir else [Path(d) for d in args.run_dirs.split(",") if d.strip()]
    try:
        if not run_dirs or len(set(map(str, run_dirs))) != len(run_dirs):
            raise InputError("--run_dirs must name at least one run, each once")
        examples, runs = load_examples(run_dirs, args.split, args.combine)
        found = find_issues(examples, args.cleanlab_filter_by)
        images = None if not args.images else load_images(examples, found["order"][:args.top], runs[0]["dataset"],
                                                          args.cifar10_dir, args.tfds_data_dir)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    names = class_names(runs[0]["dataset"], examples.probs.shape[1])
    rows, scorers, truth = tabulate(examples, found, names, len(runs) > 1)
    scorers["cleanlab"].update(call="cleanlab.filter.find_label_issues(labels, pred_probs, return_indices_ranked_by="
                                    f"'self_confidence', filter_by='{args.cleanlab_filter_by}')",
                               version=found["cleanlab_version"],
                               ranking="flagged examples in the library's order, then the rest by score")
    scorers["disagreement"].update(ranking="score = 1 - p(given label); flagged where argmax p != given label")
    summary = {"runs": runs, "split": args.split, "combine": args.combine, "in_sample": args.split == "train",
               "examples": len(rows), "classes": int(examples.probs.shape[1]),
               "shared_examples": int(np.sum(examples.runs > 1)),
               "accuracy_on_given_labels": float(np.mean(found["predicted"] == examples.labels)),
               **truth, "scorers": scorers, "top": [{k: r[k] for k in ("index", "given_class", "predicted_class",
                                                                     "score")} for r in rows[:20]],
               "outputs": [CSV_NAME, JSON_NAME] + ([PNG_NAME] if images is not None else [])}
    output_dir = Path(args.output_dir) if args.output_dir else run_dirs[0]
    try:
        if images is not None:
            image_grid(images, [{"rank": r["rank"], "index": r["index"], "given": r["given_class"],
                                 "predicted": r["predicted_class"], "clean": r.get("clean_class")}
                                for r in rows[:args.top]], output_dir / PNG_NAME)
        results.write_csv(output_dir / CSV_NAME, rows)
        results.write_json(output_dir / JSON_NAME, summary)  # last: its presence means the outputs are complete
    except OSError as error:
        print(f"error: cannot write to {output_dir}: {error}", file=sys.stderr)
        return 2

    print(f"{len(rows)} examples from {len(runs)} run(s), {args.split} split "
          f"({'in-sample' if args.split == 'train' else 'out-of-sample'}); model accuracy on the given labels "
          f"{summary['accuracy_on_given_labels']:.3f}")
    print(f"{'scorer':<14}{'flagged':>8}{'precision':>11}{'recall':>8}{'F1':>8}{'avg prec':>10}")
    for name, entry in scorers.items():
        print(f"{name:<14}{entry['flagged']:>8}{_fmt(entry.get('precision')):>11}{_fmt(entry.get('recall')):>8}"
              f"{_fmt(entry.get('f1')):>8}{_fmt(entry.get('average_precision')):>10}")
    if truth["truth_known"]:
        print(f"truly mislabeled: {truth['corrupted']} of {len(rows)} ({truth['corrupted_rate']:.1%}: the precision "
              "and average precision of a random ranking)")
    else:
        print(f"clean labels known for {examples.clean_known} of {len(rows)} examples: nothing measured")
    print(f"wrote {', '.join(str(output_dir / name) for name in summary['outputs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

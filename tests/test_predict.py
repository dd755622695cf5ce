"""python -m tfq_noise.deploy.predict: image files in, the model's classes out, as LiteRT gives them directly.

On the committed CIFAR-10 models (tflite_models/*.tflite) with CIFAR-10 test images written as PNG, and on a
tiny run exported here (its report records the class names and normalization predict reads)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from tfq_noise import results
from tfq_noise.data import cifar10
from tfq_noise.deploy import predict, verify

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO_ROOT / "tflite_models").glob("*.tflite"))
N = 200


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.asarray(pixels, np.uint8)).numpy())
    return path


@pytest.fixture(scope="module")
def test_pngs(tmp_path_factory, cifar10_data):
    """The first N CIFAR-10 test images as PNG files, spread over two nested folders."""
    root = tmp_path_factory.mktemp("pngs")
    images, labels = cifar10_data.test.images[:N], cifar10_data.test.labels[:N]
    for i, image in enumerate(images):
        write_png(root / ("a" if i % 2 else "b/c") / f"{i:04d}.png", image)
    (root / "notes.txt").write_text("not an image: skipped")
    return root, images, labels


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def by_index(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: int(Path(r["path"]).stem))


def direct(model: Path, pixels: np.ndarray) -> np.ndarray:
    """LiteRT's logits, from the pixels, normalized and quantized as the export verified the model."""
    report = json.loads(Path(str(model) + ".json").read_text())
    return verify.litert_logits(model, verify.normalize_images(pixels, report["source"]["normalization"]))


@pytest.mark.parametrize("model", COMMITTED, ids=lambda p: p.name)
def test_committed_models_predict_what_litert_gives_directly(model, test_pngs, tmp_path, capsys):
    root, images, labels = test_pngs
    output = tmp_path / "preds.csv"
    assert predict.main([str(model), str(root), f"--output={output}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = by_index(read_rows(output))
    assert len(rows) == N == summary["images"]
    assert summary["class_names"] == list(cifar10.CLASS_NAMES)  # from the run the model was exported from
    logits = direct(model, images)
    assert [int(r["class_index"]) for r in rows] == np.argmax(logits, axis=1).tolist()
    assert [r["class_name"] for r in rows] == [cifar10.CLASS_NAMES[c] for c in np.argmax(logits, axis=1)]
    probs = np.array([[float(r[f"p_{name}"]) for name in cifar10.CLASS_NAMES] for r in rows])
    np.testing.assert_allclose(probs, predict.softmax(logits), atol=2e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # Accuracy on these 200 images is near the file's reported accuracy on all 10,000 (binomial spread).
    reported = json.loads(Path(str(model) + ".json").read_text())["litert_accuracy"]
    accuracy = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert abs(accuracy - reported) <= 3.5 * math.sqrt(reported * (1 - reported) / N)


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory, cifar10_dir):
    """A tiny untrained ResNet run written by hand and exported float32 and ptq_int8 by export_run."""
    from tfq_noise.config import RunConfig
    from tfq_noise.data import DataPaths
    from tfq_noise.deploy import export
    from tfq_noise.train import build_run_model

    root = tmp_path_factory.mktemp("run")
    config = RunConfig(experiment="t", method="baseline", epochs=1, train_size=300,
                       model_kwargs={"blocks_per_stage": 1})
    run_dir = root / "t" / config.run_name
    run_dir.mkdir(parents=True)
    build_run_model(config, (32, 32, 3), 10).save_weights(run_dir / results.WEIGHTS)
    normalization = {"mean": [120.0, 118.0, 110.0], "std": [60.0, 61.0, 65.0]}
    results.write_json(run_dir / results.CONFIG, config.to_dict())
    results.write_json(run_dir / results.FINAL, {"input_shape": [32, 32, 3], "num_outputs": 10, "method": "baseline",
                                                 "normalization": normalization, "run": config.run_name,
                                                 "experiment": "t", "test_accuracy": 0.1})
    out = {}
    for kind in ("float32", "ptq_int8"):
        out[kind] = root / f"tiny_{kind}.tflite"
        export.export_run(run_dir, out[kind], kind, eval_images=64, ptq_images=16, tolerance_points=100,
                          min_agreement=0.0, paths=DataPaths(cifar10_dir=str(cifar10_dir)), print_fn=lambda *a: None)
    return out


@pytest.mark.parametrize("kind", ["float32", "ptq_int8"])
def test_a_model_exported_here_reads_its_report(kind, tiny_exports, test_pngs, tmp_path, capsys):
    model = tiny_exports[kind]
    report = json.loads(Path(str(model) + ".json").read_text())
    assert report["class_names"] == list(cifar10.CLASS_NAMES) and report["class_names_source"] == "CIFAR-10"
    assert report["sha256"] and report["source"]["normalization"]["mean"] == [120.0, 118.0, 110.0]
    root, images, _ = test_pngs
    output = tmp_path / "out" / "preds.csv"  # its folder is made
    assert predict.main([str(model), str(root), f"--output={output}", "--batch=7"]) == 0
    assert json.loads(capsys.readouterr().out)["class_names_source"] == "the export report"
    rows = by_index(read_rows(output))
    logits = direct(model, images)
    assert [int(r["class_index"]) for r in rows] == np.argmax(logits, axis=1).tolist()
    if kind == "ptq_int8":  # the input was quantized with the model's own scale and zero point
        from ai_edge_litert.interpreter import Interpreter

        detail = Interpreter(model_path=str(model)).get_input_details()[0]
        assert detail["dtype"] == np.int8 and detail["quantization"][0] > 0


def test_grayscale_and_rgba_images_are_converted_and_sizes_checked(tiny_exports, cifar10_data, tmp_path, capsys):
    model = tiny_exports["float32"]
    image = cifar10_data.test.images[0]
    gray = tf.image.rgb_to_grayscale(image).numpy()
    rgba = np.concatenate([image, np.full((32, 32, 1), 255, np.uint8)], axis=-1)
    folder = tmp_path / "mixed"
    write_png(folder / "0_gray.png", gray)
    write_png(folder / "1_rgba.png", rgba)
    output = tmp_path / "p.csv"
    assert predict.main([str(model), str(folder), f"--output={output}"]) == 0
    rows = sorted(read_rows(output), key=lambda r: r["path"])
    expected = direct(model, np.stack([tf.image.grayscale_to_rgb(tf.constant(gray)).numpy(), image]))
    assert [int(r["class_index"]) for r in rows] == np.argmax(expected, axis=1).tolist()
    # A wrong size is refused with both sizes, unless --resize.
    big = tmp_path / "big"
    write_png(big / "wide.png", np.tile(image, (1, 2, 1))[:, :40])
    output.unlink()
    assert predict.main([str(model), str(big), f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wide.png is 40x32 pixels" in err and "takes 32x32" in err and "--resize" in err
    assert not output.exists()
    assert predict.main([str(model), str(big), f"--output={output}", "--resize"]) == 0
    resized = tf.cast(tf.round(tf.image.resize(np.tile(image, (1, 2, 1))[:, :40], (32, 32), antialias=True)), tf.uint8)
    assert int(read_rows(output)[0]["class_index"]) == int(np.argmax(direct(model, resized.numpy()[None])))


def test_a_csv_of_paths(tiny_exports, test_pngs, tmp_path, capsys):
    _, images, _ = test_pngs
    for i in range(3):
        write_png(tmp_path / "imgs" / f"{i}.png", images[i])
    listing = tmp_path / "list.csv"
    listing.write_text("label,path\nx,imgs/2.png\ny,imgs/0.png\nz," + str(tmp_path / "imgs" / "1.png") + "\n")
    output = tmp_path / "p.csv"
    assert predict.main([str(tiny_exports["float32"]), str(listing), f"--output={output}"]) == 0
    rows = read_rows(output)
    assert [Path(r["path"]).name for r in rows] == ["2.png", "0.png", "1.png"]  # in the CSV's order
    logits = direct(tiny_exports["float32"], images[[2, 0, 1]])
    assert [int(r["class_index"]) for r in rows] == np.argmax(logits, axis=1).tolist()
    listing.write_text("path\nimgs/0.png\nimgs/gone.png\n")
    output.unlink()
    assert predict.main([str(tiny_exports["float32"]), str(listing), f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "gone.png not found" in err and not output.exists()


def test_bad_files_are_named_or_skipped(tiny_exports, test_pngs, tmp_path, capsys):
    model = str(tiny_exports["float32"])
    root, images, _ = test_pngs
    folder = tmp_path / "some"
    write_png(folder / "good.png", images[0])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    output = tmp_path / "p.csv"
    assert predict.main([model, str(folder), f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "broken.png is not a readable image" in err
    assert "--skip_bad" in err and not output.exists() and "Traceback" not in err
    assert predict.main([model, str(folder), f"--output={output}", "--skip_bad"]) == 0
    assert [Path(r["path"]).name for r in read_rows(output)] == ["good.png"]
    assert "skipped 1 file(s) that are not readable images" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("empty folder", "holds no images"),
    ("only text", "holds no images (.png .jpg .jpeg .bmp .gif; searched recursively, 1 other files skipped)"),
    ("missing images", "no such folder or CSV file"),
    ("not a model", "is not a TFLite model"),
    ("no report", "has no export report"),
    ("output in a file", "is a file, not a folder"),
    ("class names", "--class_names names 2 classes"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, message, tiny_exports, tmp_path, capsys):
    model, images = tiny_exports["float32"], tmp_path / "images"
    write_png(images / "x.png", np.zeros((32, 32, 3), np.uint8))
    output, extra = tmp_path / "p.csv", []
    if case == "empty folder":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "only text":
        images = tmp_path / "text"
        images.mkdir()
        (images / "a.txt").write_text("hello")
    elif case == "missing images":
        images = tmp_path / "nothing"
    elif case == "not a model":
        model = tmp_path / "model.tflite"
        model.write_text("hello")
    elif case == "no report":
        model = tmp_path / "bare.tflite"
        model.write_bytes(tiny_exports["float32"].read_bytes())
    elif case == "output in a file":
        output = images / "x.png" / "p.csv"
    else:
        extra = ["--class_names=a,b"]
    assert predict.main([str(model), str(images), f"--output={output}", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not output.exists() and not list(tmp_path.glob("*.csv"))

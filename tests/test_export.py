"""TFLite export (float32, PTQ int8, QAT int8 incl. W4/A4 via A8 re-estimation), benchmarks, Android commands.

Small on purpose: a 1-block-per-stage ResNet, one QAT run trained for one
epoch on 300 images (once per session), accuracy checks on 300 test images.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tfq_noise  # noqa: F401  (Keras 2 before TensorFlow)
from tfq_noise import results
from tfq_noise.deploy import android, benchmark, convert, export, flatbuffer, verify
from tfq_noise.config import RunConfig

EVAL = 300
TINY = {"blocks_per_stage": 1}


def _config(method: str) -> RunConfig:
    return RunConfig(experiment="t", method=method, epochs=1, train_size=300, eval_train_size=100,
                     model_kwargs=TINY)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, cifar10_dir):
    """A trained W4/A4 QAT run, and a float run dir written by hand (built model, its weights, config, final)."""
    from tfq_noise.data import DataPaths
    from tfq_noise.train import build_run_model, release_memory, train

    root = tmp_path_factory.mktemp("results") / "t"
    qat_config = _config("quantization")
    qat_dir = root / qat_config.run_name
    final = train(qat_config, qat_dir, DataPaths(cifar10_dir=str(cifar10_dir)), print_fn=lambda *a, **k: None)

    float_config = _config("baseline")
    float_dir = root / float_config.run_name
    float_dir.mkdir(parents=True)
    model = build_run_model(float_config, final["input_shape"], final["num_outputs"])
    model.save_weights(float_dir / results.WEIGHTS)
    results.write_json(float_dir / results.CONFIG, float_config.to_dict())
    results.write_json(float_dir / results.FINAL, {**final, "method": "baseline", "run": float_config.run_name,
                                                   "hparams": {}})
    release_memory()
    return {"qat": qat_dir, "float": float_dir, "cifar10_dir": str(cifar10_dir)}


def _cli(run_dir, output, cifar10_dir, *extra) -> list[str]:
    return [f"--run_dir={run_dir}", f"--output={output}", f"--cifar10_dir={cifar10_dir}",
            f"--eval_images={EVAL}", "--tolerance_points=3", "--min_agreement=0.95",
            "--trained_tolerance_points=5", *extra]


@pytest.fixture(scope="session")
def float_exports(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for kind in ("float32", "ptq_int8"):
        paths[kind] = out / f"tiny_{kind}.tflite"
        assert export.main(_cli(runs["float"], paths[kind], runs["cifar10_dir"], f"--kind={kind}",
                                "--ptq_images=64")) == 0
    return paths


def _assert_all_int8(summary):
    assert flatbuffer.integer_problems(summary) == []
    kernels = [op for op in summary.ops if op["op"] in flatbuffer.INTEGER_KERNEL_OPS]
    assert kernels and all(op["inputs"][0] == "INT8" and op["weight_type"] == "INT8" for op in kernels)


def test_float32_and_ptq_exports(float_exports):
    float_report = json.loads(Path(str(float_exports["float32"]) + ".json").read_text())
    assert float_report["kind"] == "float32"
    assert flatbuffer.summarize(float_exports["float32"].read_bytes()).input["type"] == "FLOAT32"
    ptq = json.loads(Path(str(float_exports["ptq_int8"]) + ".json").read_text())
    for key in ("source", "kind", "keras_accuracy", "litert_accuracy", "size_bytes", "ops", "grid_check", "date",
                "machine"):
        assert key in ptq
    assert ptq["kind"] == "ptq_int8" and ptq["ptq"]["calibration_images"] == 64
    assert ptq["argmax_agreement"] >= 0.95 and ptq["eval_images"] == EVAL
    _assert_all_int8(flatbuffer.summarize(float_exports["ptq_int8"].read_bytes()))
    assert ptq["size_bytes"] < 0.4 * float_report["size_bytes"]


def test_qat_w4a4_export_reestimates_a8_ranges(runs, tmp_path):
    output = tmp_path / "w4a4.tflite"
    assert export.main(_cli(runs["qat"], output, runs["cifar10_dir"])) == 0  # kind auto → qat_int8
    report = json.loads(Path(str(output) + ".json").read_text())
    assert report["kind"] == "qat_int8" and report["weight_storage"] == "int8"
    a8 = report["a8_reestimation"]
    assert a8["activation_bits_trained"] == 4 and a8["batches"] >= 1
    assert a8["hparams_exported"]["layer_bits"]["s1b1_conv1"] == [4, 8]
    for key in ("keras_accuracy_original", "keras_accuracy_a8_learned_ranges", "keras_accuracy_a8_reestimated",
                "litert_minus_original_points"):
        assert key in a8
    assert report["keras_accuracy"] == a8["keras_accuracy_a8_reestimated"]
    assert report["argmax_agreement"] >= 0.95
    trained = report["against_trained_model"]  # checked against the W4/A4 model as trained too
    assert trained["keras_accuracy"] == a8["keras_accuracy_original"] and trained["tolerance_points"] == 5.0
    assert abs(trained["litert_minus_trained_points"]) <= 5.0 and 0 <= trained["argmax_agreement"] <= 1
    assert report["logit_error"]["abs_error_percentiles"]["50"] >= 0
    _assert_all_int8(flatbuffer.summarize(output.read_bytes()))
    # The 4-bit grid survives: every W4 conv output channel holds <= 15 distinct int8 values.
    config = RunConfig.from_dict(results.read_json(runs["qat"] / results.CONFIG))
    low_bits = convert.low_bit_weight_layers(config, results.read_json(runs["qat"] / results.FINAL))
    assert len(low_bits) == 8 and set(low_bits.values()) == {4}
    grid = report["grid_check"]
    assert grid["passed"] and grid["checked_layers"] == 8
    assert flatbuffer.weight_grid(output.read_bytes(), low_bits)["passed"]
    w4 = {name: layer for name, layer in grid["layers"].items() if layer.get("weight_bits") == 4}
    assert len(w4) == 8 and all(l["max_distinct_per_channel"] <= 15 and l["max_abs_integer"] <= 7 for l in w4.values())
    assert grid["layers"]["stem"]["max_distinct_per_channel"] > 15  # the W8 first layer is not on the 4-bit grid


def test_qat_int4_storage_keeps_packed_weights(runs, tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    output = tmp_path / "w4a4_int4.tflite"
    report = export.export_run(runs["qat"], output, "qat_int8", weight_storage="int4", eval_images=EVAL,
                               tolerance_points=3, min_agreement=0.95, range_batches=0,
                               paths=_paths(runs), print_fn=lambda *a: None)
    assert report["a8_reestimation"]["batches"] == 0  # learned ranges kept
    assert report["tflite"]["kernel_weight_types"] == {"INT8": 2, "INT4": 8}
    assert report["grid_check"]["passed"]
    # Our unpacking of INT4 buffers matches LiteRT's reading of them.
    data = output.read_bytes()
    model_t = flatbuffer.read_model(data)
    interpreter = Interpreter(model_content=data,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    checked = 0
    for index, tensor in enumerate(model_t.subgraphs[0].tensors):
        if flatbuffer._tensor_type_name(tensor.type) == "INT4":  # pylint: disable=protected-access
            np.testing.assert_array_equal(flatbuffer.tensor_values(model_t, tensor), interpreter.get_tensor(index))
            checked += 1
    assert checked == 8
    unpacked, count = flatbuffer.unpack_low_bit_weights(data)
    assert count == 8 and flatbuffer.summarize(unpacked).weight_storage == {"INT8": 10}


def _paths(runs):
    from tfq_noise.data import DataPaths

    return DataPaths(cifar10_dir=runs["cifar10_dir"])


@pytest.fixture(scope="module")
def test_images(runs):
    from tfq_noise.data import cifar10

    data = cifar10.load(runs["cifar10_dir"])
    final = results.read_json(runs["qat"] / results.FINAL)
    return verify.normalize_images(data.test.images[:EVAL], final["normalization"]), data.test.labels[:EVAL]


def test_w8a8_in_memory_export(test_images, tmp_path):
    from tfq_noise.models import resnet20
    from tfq_noise.quantization import quantize_model

    images, labels = test_images
    model = quantize_model(resnet20(**TINY), 8, 8, 8)
    for start in (0, 128):  # training-mode passes set the activation ranges
        model(images[start:start + 128], training=True)
    output = tmp_path / "w8a8.tflite"
    report = export.export_model(model, "qat_int8", output, eval_images=images, eval_labels=labels,
                                 tolerance_points=3, min_agreement=0.95, strip_names=True)
    assert report["ops"] == {"ADD": 3, "CONV_2D": 9, "FULLY_CONNECTED": 1, "MEAN": 1}
    assert report["low_bit_tensors_unpacked_to_int8"] == 0 and report["tensor_names_stripped"]
    assert report["grid_check"]["passed"] and report["grid_check"]["layers"]["stem"]["storage"] == "INT8"
    _assert_all_int8(flatbuffer.summarize(output.read_bytes()))
    assert all(not t.name for t in flatbuffer.read_model(output.read_bytes()).subgraphs[0].tensors)


def test_reestimation_freezes_batchnorm_and_sets_ranges(test_images):
    from tfq_noise.models import resnet20
    from tfq_noise.quantization import quantize_model

    images, _ = test_images
    model = quantize_model(resnet20(**TINY), 4, 8, 8)
    model(images[:64], training=True)
    ranges = convert.reestimate_activation_ranges(model, images, batch_size=64, max_batches=3)
    assert ranges["batches"] == 3
    variables = convert.range_variables(model)
    assert len(variables) == len(ranges["ranges"]) and all(float(v.numpy()) > 0 for v in variables)
    # The input range is the mean of the batch maxima of |x|.
    expected = np.mean([np.abs(images[i * 64:(i + 1) * 64]).max() for i in range(3)])
    input_range = next(v for v in variables if "quantize_layer" in v.name)
    assert float(input_range.numpy()) == pytest.approx(expected, rel=1e-5)


def test_failed_verification_leaves_no_file(test_images, tmp_path, monkeypatch):
    from tfq_noise.models import resnet20

    images, labels = test_images
    output = tmp_path / "out" / "bad.tflite"
    model = resnet20(**TINY)
    real = verify.litert_logits
    monkeypatch.setattr(verify, "litert_logits", lambda *a, **k: -real(*a, **k))  # argmin: a broken conversion
    keras_classes = np.argmax(verify.keras_logits(model, images[:20]), axis=1)
    with pytest.raises(export.ExportError, match="differs from the Keras model's 100.00%"):
        export.export_model(model, "float32", output, eval_images=images[:20], eval_labels=keras_classes)
    assert list(output.parent.iterdir()) == []
    monkeypatch.setattr(verify, "litert_logits", real)
    with pytest.raises(export.ExportError, match=r"conversion \(qat_int8\) failed"):  # a float model has no ranges
        export.export_model(resnet20(**TINY), "qat_int8", output, eval_images=images[:20], eval_labels=labels[:20])
    assert list(output.parent.iterdir()) == []


def test_export_errors(runs, tmp_path, capsys):
    with pytest.raises(export.ExportError, match="no run directory"):
        export.export_run(tmp_path / "nope")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["qat"] / results.CONFIG, unfinished)
    with pytest.raises(export.ExportError, match="not a finished run"):
        export.export_run(unfinished)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in (results.CONFIG, results.FINAL):
        shutil.copy(runs["qat"] / name, no_weights)
    with pytest.raises(export.ExportError, match="model.weights.h5 is missing"):
        export.export_run(no_weights)
    with pytest.raises(export.ExportError, match="qat_int8 needs a quantization-aware run"):
        export.export_run(runs["float"], tmp_path / "x.tflite", "qat_int8")
    with pytest.raises(export.ExportError, match="export it with --kind=qat_int8"):
        export.export_run(runs["qat"], tmp_path / "x.tflite", "ptq_int8")
    with pytest.raises(export.ExportError, match="--kind=int3"):
        export.export_run(runs["qat"], tmp_path / "x.tflite", "int3")
    with pytest.raises(export.ExportError, match="--weight_storage=int3"):
        export.export_run(runs["qat"], tmp_path / "x.tflite", weight_storage="int3")
    assert export.main([f"--run_dir={tmp_path / 'nope'}"]) == 2  # bad input: exit 2
    assert "no run directory" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tflite*"))


def test_unpack_integers():
    # int4: low nibble first; -1 = 0xF, 7 = 0x7, -7 = 0x9
    np.testing.assert_array_equal(flatbuffer.unpack_integers(np.array([0x7F, 0x09], np.uint8), 4, 3), [-1, 7, -7])
    np.testing.assert_array_equal(flatbuffer.unpack_integers(np.array([0b11010001], np.uint8), 2, 4), [1, 0, 1, -1])


def test_benchmark(float_exports, tmp_path, capsys):
    output = tmp_path / "bench.json"
    models = [str(float_exports["float32"]), str(float_exports["ptq_int8"])]
    assert benchmark.main([*models, f"--output={output}", "--warmup_runs=2", "--runs=10", "--batch=4",
                              "--batch_runs=2"]) == 0
    report = json.loads(output.read_text())
    for key in ("date", "machine", "settings", "targets", "models", "comparisons", "load_average_before"):
        assert key in report
    float_entry, int8_entry = report["models"]
    assert float_entry["kind"] == "float32" and int8_entry["kind"] == "ptq_int8"
    for entry in report["models"]:
        assert set(entry["latency_ms"]) == {"1", "2"} and entry["latency_ms"]["1"]["runs"] == 10
        assert entry["latency_ms"]["1"]["p90"] >= entry["latency_ms"]["1"]["median"] > 0
        assert set(entry["throughput_images_per_s"]) == {"1", "2"}
        assert entry["xnnpack_applied"] and entry["xnnpack"]["1"]["delegated_ops"] == entry["xnnpack"]["1"]["total_ops"]
        assert 0 < entry["peak_rss_delta_mb_batch1"] < 500 and entry["size_bytes"] > 0
    (comparison,) = report["comparisons"]
    assert comparison["reference"] == float_entry["name"]
    assert comparison["reference_chosen_by"] == "float32 export of the same run"
    assert comparison["architecture"] == float_entry["architecture"] == int8_entry["architecture"] is not None
    # A 1-block-per-stage ResNet is a ResNet8: ratios, but not ResNet20's targets.
    assert comparison["network"] == "ResNet8" and comparison["size_target"] is None
    assert comparison["latency_target"] is None and "ResNet8" in comparison["targets_not_applied"]
    assert comparison["size_ratio"] == pytest.approx(int8_entry["size_bytes"] / float_entry["size_bytes"])
    assert set(comparison["latency_ratio"]) == {"1", "2"} and report["not_compared"] == []
    assert "lat ratio" in capsys.readouterr().out


def test_bench_delegation_from_ops():
    ops = [  # conv(0) → add(1) → conv(2); a delegate took 0 and 1 only
        {"op_name": "CONV_2D", "inputs": [0, 10], "outputs": [1]},
        {"op_name": "ADD", "inputs": [1, 0], "outputs": [2]},
        {"op_name": "CONV_2D", "inputs": [2, 11], "outputs": [3]},
        {"op_name": "DELEGATE", "inputs": [0, 10], "outputs": [2]},
    ]
    info = benchmark.delegation(ops)
    assert info == {"applied": True, "delegate_nodes": 1, "delegated_ops": 2, "total_ops": 3,
                    "ops_not_delegated": ["CONV_2D"]}


def test_benchmark_compares_one_architecture_only():
    def entry(name, dtype, architecture, run=None):
        return {"model": name, "name": name, "input_dtype": dtype, "architecture": architecture, "source_run": run,
                "size_bytes": 100, "latency_ms": {"1": {"median": 1.0}}, "throughput_images_per_s": {}}

    entries = [entry("a_float.tflite", "float32", "A"), entry("b_float.tflite", "float32", "B"),
               entry("b_int8.tflite", "int8", "B"), entry("c_int8.tflite", "int8", "C"),
               entry("u_int8.tflite", "int8", None)]
    comparisons = benchmark.compare(entries, [1], reference="a_float.tflite")
    assert [(c["model"], c["reference"], c["architecture"]) for c in comparisons] == [
        ("b_int8.tflite", "b_float.tflite", "B")]  # not against a_float (--reference, other architecture)


# litert-benchmark's stdout (ai-edge-litert 2.3.0) for the 9,000-image protocol's post-training int8 file (shipped then),
# --num_threads=1 --warmup_runs=5 --num_runs=20, on a loaded machine; its log lines go to stderr.
LITERT_BENCHMARK_OUTPUT = """\

========================================
 BENCHMARK RESULTS
========================================
Model initialization:  13.76 ms
Warmup (first):        1.70 ms
Warmup (avg):          3.25 ms (5 runs)
Inference (avg):       3.27 ms (20 runs)
Inference (min):       1.46 ms
Inference (max):       17.68 ms
Inference (median):    1.54 ms
Inference (std):       4.40 ms
Inference (p5):        1.47 ms
Inference (p95):       13.86 ms
Throughput:            0.90 MB/s
Fully accelerated:     True
========================================
"""


def test_parse_litert_benchmark_output():
    out = benchmark.parse_litert_benchmark(LITERT_BENCHMARK_OUTPUT)
    assert out["avg_ms"] == pytest.approx(3.27) and out["runs"] == 20
    assert out["median_ms"] == pytest.approx(1.54) and out["p95_ms"] == pytest.approx(13.86)
    assert out["init_ms"] == pytest.approx(13.76) and out["warmup_avg_ms"] == pytest.approx(3.25)
    assert out["fully_accelerated"] is True
    with pytest.raises(ValueError, match="no 'Inference \\(avg\\)"):
        benchmark.parse_litert_benchmark("ERROR benchmark_litert_model: Model file not found: x.tflite\n")


@pytest.mark.skipif(shutil.which("litert-benchmark") is None,
                    reason="litert-benchmark is not on PATH (ai-edge-litert 2.3.0 installs it)")
def test_benchmark_cross_check(tmp_path, capsys):
    from tfq_noise import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(32, 3, padding="same"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10)])
    path = tmp_path / "tiny_float32.tflite"
    path.write_bytes(convert.convert_float32(model))
    output = tmp_path / "bench.json"
    assert benchmark.main([str(path), "--cross_check", "--threads=1", "--warmup_runs=2", "--runs=10", "--batch=2",
                           "--batch_runs=2", f"--output={output}"]) == 0
    report = json.loads(output.read_text())
    assert report["settings"]["cross_check"]["tool"] == "litert-benchmark"
    (entry,) = report["models"]
    check = entry["cross_check"]["1"]
    assert check["ours_mean_ms"] > 0 and check["litert_benchmark_avg_ms"] > 0
    assert check["litert_benchmark_runs"] == 10  # read from its "Inference (avg): ... (10 runs)" line
    assert check["litert_benchmark_rounds"][0]["avg_ms"] == check["litert_benchmark_avg_ms"]
    assert check["litert_benchmark_over_ours"] == pytest.approx(
        check["litert_benchmark_avg_ms"] / check["ours_mean_ms"])
    out = capsys.readouterr().out
    assert "mean 1t ms" in out and "litert-bm 1t ms" in out and f"{check['litert_benchmark_avg_ms']:.2f}" in out
    assert benchmark.main([str(path), "--cross_check", "--litert_benchmark=no-such-tool"]) == 2
    assert "--cross_check" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Android

BENCHMARK_OUTPUT = """\
INFO: Initialized TensorFlow Lite runtime.
INFO: The input model file size (MB): 0.310216
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: Running benchmark for at least 50 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1830 curr=402 min=389 max=1830 avg=431.2 std=201
INFO: Running benchmark for at least 200 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=2480 first=410 curr=396 min=381 max=912 avg=402.5 std=21 p5=385 median=398 p95=430
INFO: Inference timings in us: Init: 21432, First inference: 1830, Warmup (avg): 431.2, Inference (avg): 402.5
INFO: Memory footprint delta from the start of the tool (MB): init=3.25 overall=5.5
INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.875
"""


def test_android_commands():
    options = [android.BenchmarkOptions(num_threads=1, warmup_runs=20, num_runs=100),
               android.BenchmarkOptions(num_threads=4, use_gpu=True)]
    plan = android.build_plan("adb", "/bin/bm", ["m/a.tflite"], options, serial="XYZ")
    assert [s["step"] for s in plan] == ["mkdir", "push_binary", "chmod", "push_model", "benchmark", "benchmark"]
    assert plan[1]["argv"] == ["adb", "-s", "XYZ", "push", "/bin/bm", "/data/local/tmp/tfq_noise/benchmark_model"]
    assert plan[3]["argv"] == ["adb", "-s", "XYZ", "push", "m/a.tflite", "/data/local/tmp/tfq_noise/a.tflite"]
    assert plan[4]["argv"] == [
        "adb", "-s", "XYZ", "shell",
        "/data/local/tmp/tfq_noise/benchmark_model --graph=/data/local/tmp/tfq_noise/a.tflite --num_threads=1 "
        "--use_xnnpack=true --warmup_runs=20 --num_runs=100"]
    assert plan[5]["argv"][-1].endswith("--num_threads=4 --use_xnnpack=true --warmup_runs=50 --num_runs=200 "
                                        "--use_gpu=true")
    assert android.benchmark_command("adb", "a.tflite", android.BenchmarkOptions(use_nnapi=True))[-1].endswith(
        "--use_nnapi=true")
    with pytest.raises(ValueError):
        android.BenchmarkOptions(use_gpu=True, use_nnapi=True)


def test_android_parse_output():
    out = android.parse_benchmark_output(BENCHMARK_OUTPUT)
    assert out["inference_avg_ms"] == pytest.approx(0.4025) and out["inference_std_ms"] == pytest.approx(0.021)
    assert out["init_ms"] == pytest.approx(21.432) and out["runs"] == 2480
    assert out["inference_median_ms"] == pytest.approx(0.398)
    assert out["peak_memory_mb"] == pytest.approx(9.875) and out["memory_delta_overall_mb"] == pytest.approx(5.5)
    assert out["delegate"] == {"name": "XNNPACK", "coverage": "completely", "kernels": None}
    with pytest.raises(android.AndroidBenchmarkError, match="no 'Inference timings'"):
        android.parse_benchmark_output("ERROR: Failed to apply GPU delegate.\nBenchmarking failed.\n")


def test_android_errors(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_text("")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    options = [android.BenchmarkOptions()]
    with pytest.raises(android.AndroidBenchmarkError, match="adb not found"):
        android.run_benchmarks([model], binary, options, adb=str(tmp_path / "no-adb"))
    with pytest.raises(android.AndroidBenchmarkError, match="--benchmark_binary is required"):
        android.run_benchmarks([model], None, options)
    with pytest.raises(android.AndroidBenchmarkError, match="binary not found"):
        android.run_benchmarks([model], tmp_path / "missing", options)

    def no_device(argv):
        return subprocess.CompletedProcess(argv, 0, "List of devices attached\n\n", "")

    with pytest.raises(android.AndroidBenchmarkError, match="no Android device"):
        android.run_benchmarks([model], binary, options, runner=no_device)
    assert android.parse_devices("List of devices attached\nA1\tdevice\nB2\tunauthorized\n") == ["A1"]

    calls = []

    def device(argv):
        calls.append(list(argv))
        if argv[-1] == "devices":
            return subprocess.CompletedProcess(argv, 0, "List of devices attached\nA1\tdevice\n", "")
        if "benchmark_model --graph" in argv[-1]:
            return subprocess.CompletedProcess(argv, 0, BENCHMARK_OUTPUT, "")
        return subprocess.CompletedProcess(argv, 0, "Pixel\n", "")

    report = android.run_benchmarks([model], binary, options, runner=device)
    assert report["device"]["serial"] == "A1" and report["runs"][0]["inference_avg_ms"] == pytest.approx(0.4025)
    assert all(c[:3] == ["adb", "-s", "A1"] for c in calls[1:])
    assert android.main([str(model), f"--benchmark_binary={binary}", f"--adb={tmp_path / 'no-adb'}"]) == 1


def test_logit_error_summary_and_agreement_rule():
    reference = np.array([[3.0, 0.0, 0.0], [1.0, 0.9, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]], np.float32)
    lite = reference.copy()
    lite[1] = [0.9, 1.0, 0.0]  # the small-margin image flips
    summary = verify.logit_error_summary(lite, reference)
    unit = float(np.std(reference))
    assert summary["unit_value"] == pytest.approx(unit)
    assert summary["abs_error_max"] == pytest.approx(0.1 / unit, rel=1e-5)
    quartiles = summary["agreement_by_margin_quartile"]
    assert sum(q["images"] for q in quartiles) == 4
    assert quartiles[0]["agreement"] == 0.0 and all(q["agreement"] == 1.0 for q in quartiles[1:])
    assert summary["median_margin_disagreeing"] == pytest.approx(0.1 / unit, rel=1e-5)
    assert verify.agreement_requirement(None) == pytest.approx(0.98)
    assert verify.agreement_requirement(0.9) == pytest.approx(0.89)
    assert verify.agreement_requirement(1.0, target=0.99, slack=0.0) == pytest.approx(0.99)


def test_rounding_floor_separates_float_and_low_bit_models(test_images):
    from tfq_noise.models import resnet20
    from tfq_noise.quantization import quantize_model

    images, _ = test_images
    float_model = resnet20(**TINY)
    assert verify.rounding_floor(float_model, images, step=0.016) == 1.0  # a float network barely moves
    from tfq_noise import keras

    keras.utils.set_random_seed(3)  # an initialization whose untrained W4/A4 net is not a constant function
    low_bit = quantize_model(resnet20(**TINY), 4, 4, 8)
    low_bit(images[:128], training=True)
    assert len(np.unique(np.argmax(verify.keras_logits(low_bit, images), -1))) > 2
    # A step-sized nudge moves 4-bit activations across rounding boundaries: some classes change.
    assert verify.rounding_floor(low_bit, images, step=0.016, fraction=1.0) < 1.0


def test_agreement_below_requirement_leaves_no_file(test_images, tmp_path, monkeypatch):
    from tfq_noise.models import resnet20

    images, labels = test_images
    model = resnet20(**TINY)
    real = verify.litert_logits
    # A LiteRT model that swaps two logits on a third of the images: equal accuracy is not enough.
    def swapped(path, x, *a, **k):
        logits = real(path, x, *a, **k)
        logits[::3] = logits[::3, ::-1]
        return logits

    monkeypatch.setattr(verify, "litert_logits", swapped)
    output = tmp_path / "out" / "disagreeing.tflite"
    with pytest.raises(export.ExportError, match="agree on the class"):
        export.export_model(model, "float32", output, eval_images=images, eval_labels=labels, tolerance_points=100)
    assert list(output.parent.iterdir()) == []


def test_trained_grid_export_and_trained_bound(runs, tmp_path, monkeypatch):
    from tfq_noise.deploy.export import load_model_float32

    output = tmp_path / "grid.tflite"
    report = export.export_run(runs["qat"], output, trained_grid=True, eval_images=EVAL, tolerance_points=3,
                               min_agreement=0.9, trained_tolerance_points=5, paths=_paths(runs),
                               print_fn=lambda *a: None)
    a8 = report["a8_reestimation"]
    assert a8["method"].startswith("trained grid") and a8["batches"] == 0
    config = RunConfig.from_dict(results.read_json(runs["qat"] / results.CONFIG))
    trained = load_model_float32(runs["qat"], config, results.read_json(runs["qat"] / results.FINAL))
    learned = {v.name: float(v.numpy()) for v in convert.range_variables(trained)}
    # Every 4-bit activation (not the 8-bit input, logits or BN outputs before an Add) keeps its step r/7.
    assert a8["ranges"] and "quantize_layer/quantize_layer_range_ema:0" not in a8["ranges"]
    for name, value in a8["ranges"].items():
        assert value == pytest.approx(learned[name] * 127 / 7, rel=1e-5)
    assert abs(a8["keras_accuracy_a8_reestimated"] - a8["keras_accuracy_original"]) <= 0.03
    _assert_all_int8(flatbuffer.summarize(output.read_bytes()))
    real = verify.litert_logits
    monkeypatch.setattr(verify, "litert_logits", lambda *a, **k: -real(*a, **k))  # far from the trained model
    with pytest.raises(export.ExportError, match="model as trained"):
        export.export_run(runs["qat"], tmp_path / "strict.tflite", trained_grid=True, eval_images=EVAL,
                          tolerance_points=100, min_agreement=0.0, trained_tolerance_points=0, tolerance_images=0,
                          paths=_paths(runs), print_fn=lambda *a: None)
    assert not list(tmp_path.glob("strict*")) and not list(tmp_path.glob(".strict*"))


def test_ptq_layer_errors(runs, tmp_path, capsys):
    from experiments import ptq_layer_errors

    output = tmp_path / "errors.csv"
    assert ptq_layer_errors.main([f"--run_dir={runs['float']}", "--debug_images=16", "--calibration_images=16",
                                  f"--cifar10_dir={runs['cifar10_dir']}", f"--output={output}"]) == 0
    rows = list(__import__("csv").DictReader(output.open()))
    assert [r["op"] for r in rows].count("CONV_2D") == 9 and "FULLY_CONNECTED" in [r["op"] for r in rows]
    # A correctly quantized op errs by rounding: well under a few steps, not zero.
    assert all(0 < float(r["rmse_steps"]) < 3 for r in rows)
    assert ptq_layer_errors.main([f"--run_dir={runs['qat']}", f"--cifar10_dir={runs['cifar10_dir']}"]) == 1
    assert "quantization-aware" in capsys.readouterr().err


def test_litert_quantizer_peer(runs, tmp_path, monkeypatch):
    """The aeq_* kinds run on litert-quantizer (the maintained ai-edge-quantizer), not on the old package."""
    import sys
    from importlib import metadata

    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)  # importing it would now fail
    reports = {}
    for kind in ("aeq_w8a8", "aeq_w4a8"):
        output = tmp_path / f"{kind}.tflite"
        reports[kind] = export.export_run(runs["float"], output, kind, eval_images=EVAL, ptq_images=32,
                                          tolerance_points=100, min_agreement=0.0, paths=_paths(runs),
                                          print_fn=lambda *a: None)
        summary = flatbuffer.summarize(output.read_bytes())
        assert flatbuffer.integer_problems(summary, ("INT8", "INT4")) == []
        assert reports[kind]["ptq"]["tool"] == "litert-quantizer static recipe"
        assert reports[kind]["ptq"]["tool_version"] == metadata.version("litert-quantizer")
    assert reports["aeq_w8a8"]["tflite"]["kernel_weight_types"] == {"INT8": 10}
    assert reports["aeq_w4a8"]["tflite"]["kernel_weight_types"] == {"INT4": 10}
    assert reports["aeq_w4a8"]["weight_storage"] == "int4"
    assert reports["aeq_w4a8"]["size_bytes"] < 0.7 * reports["aeq_w8a8"]["size_bytes"]
    with pytest.raises(export.ExportError, match="export it with --kind=qat_int8"):
        export.export_run(runs["qat"], tmp_path / "x.tflite", "aeq_w8a8")


def test_a_layer_keras_named_itself_is_matched_to_its_plan_across_builds():
    """Keras suffixes an auto-named layer anew at each build in a process (global_average_pooling2d_4 in the
    rebuilt model, global_average_pooling2d in the plan): the trained-grid export matches it on the base name."""
    from tfq_noise.deploy import convert

    plans = {"Conv1": "stem", "global_average_pooling2d": "pool", "Conv_1": "last", "add": "a", "add_1": "b"}
    assert convert._plan_of(plans, "global_average_pooling2d_4") == "pool"
    assert convert._plan_of(plans, "Conv1") == "stem" and convert._plan_of(plans, "add_1") == "b"
    with pytest.raises(convert.ExportError, match="2 candidates"):
        convert._plan_of(plans, "add_7")  # add and add_1 both fit: refused, not guessed
    with pytest.raises(convert.ExportError, match="0 candidates"):
        convert._plan_of(plans, "dense_3")

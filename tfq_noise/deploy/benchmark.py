"""Benchmarks .tflite models with LiteRT on this CPU: latency, throughput, size, memory, int8/float ratios.

    python -m tfq_noise.deploy.benchmark tflite_models/*.tflite [--output=benchmark.json]
        [--threads=1,2] [--warmup_runs=50] [--runs=500] [--batch=32] [--batch_runs=20] [--rounds=1]
        [--cross_check [--litert_benchmark=litert-benchmark]]

Per model, in a fresh subprocess (``python -P`` running this file, which
imports only numpy and ai_edge_litert, never TensorFlow):

* latency at batch 1, for each thread count: ``--warmup_runs`` invocations,
  then the median and 90th percentile of ``--runs`` timed ``invoke()`` calls
  (``time.perf_counter_ns`` around each call; the input is set once, random);
* throughput at batch ``--batch`` (input resized): images per second from the
  median time of ``--batch_runs`` invocations after 3 warm-up ones;
* XNNPACK: the interpreter is created with LiteRT's default delegates, which
  apply XNNPACK on CPU; whether it was applied, and how many of the model's
  operators it took, is read from the interpreter's nodes (each DELEGATE node
  covers the operators between its inputs and outputs);
* peak memory: the subprocess's peak resident set size (``VmHWM``, reset
  through ``/proc/self/clear_refs`` just before the model is loaded, after
  Python, numpy and LiteRT are imported) minus its resident set size then.
  (``getrusage``'s ``ru_maxrss`` is not used: a child keeps the peak of the
  TensorFlow-sized parent it was forked from.) It counts everything the model brings: the mapped file pages,
  the tensor arena, XNNPACK's packed weights and thread pool. Measured after
  the batch-1 runs and again after the batch-``--batch`` runs (peak is
  monotone). Interpreters are created one after the other, and a freed one's
  memory may be reused by the next, so this is the peak of one at a time.
* file size.

int8 models get random int8 inputs, float models random normal float32
inputs: the work does not depend on the values. Models are compared with a
float32 reference of the same architecture (input shape and kernel shapes,
read from the files; ratios are never computed across architectures): the
float32 model exported from the same run (read from the ``<model>.tflite.json``
that ``tfq_noise.deploy.export`` writes), else the first float32 model given,
or ``--reference``. Targets reported (met or not): int8 latency at 1 thread
<= 0.30x the float32 one, int8 file <= 0.28x.

``--rounds=R`` runs every model R times in turn (round robin), pooling the
timed samples: other load on the machine then weighs on every model alike.

``--cross_check`` also times every model with an independent timer,
``litert-benchmark`` (installed by ai-edge-litert 2.3.0; LiteRT's
CompiledModel API, its own process), right after ours in each round, at each
thread count, with the same warm-up and timed runs. Its average (which it
prints to 0.01 ms) stands beside the mean of our samples, per model, and the
int8/float32 latency ratios are given by both timers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

LATENCY_TARGET = 0.30
SIZE_TARGET = 0.28


# ----------------------------------------------------------------------------- worker (subprocess)


def _status_bytes(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    # VmHWM is the peak of this process image: unlike getrusage's ru_maxrss, it
    # does not inherit the (TensorFlow-sized) peak of the parent that forked us.
    return _status_bytes("VmHWM")


def delegation(ops: Sequence[dict]) -> dict:
    """Which operators the delegate(s) took, from ``Interpreter._get_ops_details()``.

    Delegate nodes are appended after the model's operators; each covers the
    operators found walking back from its outputs to its inputs.
    """
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {}
    for position, op in enumerate(original):
        for tensor in op["outputs"]:
            producer[int(tensor)] = position
    covered: set[int] = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        stack = [producer[int(t)] for t in node["outputs"] if int(t) in producer]
        while stack:
            position = stack.pop()
            if position in covered:
                continue
            covered.add(position)
            for tensor in original[position]["inputs"]:
                tensor = int(tensor)
                if tensor >= 0 and tensor not in boundary and tensor in producer:
                    stack.append(producer[tensor])
    left = sorted({original[i]["op_name"] for i in range(len(original)) if i not in covered})
    return {"applied": bool(delegates), "delegate_nodes": len(delegates), "delegated_ops": len(covered),
            "total_ops": len(original), "ops_not_delegated": left}


def _random_input(detail, batch: int):
    import numpy as np

    shape = [batch, *[int(d) for d in detail["shape"][1:]]]
    rng = np.random.default_rng(0)
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _time_invokes(interpreter, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        interpreter.invoke()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def measure(model_path: str, threads: Sequence[int], warmup_runs: int, runs: int, batch: int,
            batch_runs: int) -> dict:
    """One model, in this process (run it in a fresh one: see ``run_worker``). Raw samples in ms."""
    from ai_edge_litert.interpreter import Interpreter

    peak_reset = _reset_peak_rss()
    base_rss = _status_bytes("VmRSS")
    out: dict = {"latency_samples_ms": {}, "batch_samples_ms": {}, "xnnpack": {}, "peak_reset": peak_reset}
    for n in threads:
        interpreter = Interpreter(model_path=model_path, num_threads=n)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
        interpreter.allocate_tensors()
        out["xnnpack"][str(n)] = delegation(interpreter._get_ops_details())  # pylint: disable=protected-access
        interpreter.set_tensor(detail["index"], _random_input(detail, 1))
        out["input_dtype"] = str(detail["dtype"].__name__)
        out["latency_samples_ms"][str(n)] = _time_invokes(interpreter, warmup_runs, runs)
        del interpreter
    out["peak_rss_delta_bytes_batch1"] = _peak_rss_bytes() - base_rss
    if batch > 1 and batch_runs > 0:
        for n in threads:
            interpreter = Interpreter(model_path=model_path, num_threads=n)
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], _random_input(detail, batch))
            out["batch_samples_ms"][str(n)] = _time_invokes(interpreter, 3, batch_runs)
            del interpreter
        out["peak_rss_delta_bytes_batch"] = _peak_rss_bytes() - base_rss
    return out


def run_worker(model_path: str | Path, threads: Sequence[int], warmup_runs: int, runs: int, batch: int,
               batch_runs: int, timeout: float = 600) -> dict:
    """``measure`` in a fresh Python process; adds whether LiteRT logged the XNNPACK delegate."""
    spec = json.dumps({"model_path": str(model_path), "threads": list(threads), "warmup_runs": warmup_runs,
                       "runs": runs, "batch": batch, "batch_runs": batch_runs})
    proc = subprocess.run([sys.executable, "-P", str(Path(__file__).resolve()), "--_worker", spec],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {model_path} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["xnnpack_logged"] = "XNNPACK delegate" in proc.stderr
    return result


_LITERT_FIELDS = {"Model initialization": "init_ms", "Warmup (first)": "warmup_first_ms",
                  "Warmup (avg)": "warmup_avg_ms",
                  **{f"Inference ({k})": f"{k}_ms" for k in ("avg", "min", "max", "median", "std", "p5", "p95")}}


def parse_litert_benchmark(text: str) -> dict:
    """What ``litert-benchmark`` (ai-edge-litert 2.3.0) prints on stdout: times in ms, runs, full delegation."""
    labels = "|".join(re.escape(label) for label in _LITERT_FIELDS)
    out: dict = {_LITERT_FIELDS[label]: float(value)
                 for label, value in re.findall(rf"^({labels}):\s+([0-9.]+) ms", text, re.M)}
    runs = re.search(r"^Inference \(avg\):\s+[0-9.]+ ms \((\d+) runs\)", text, re.M)
    if runs is None:
        raise ValueError("no 'Inference (avg): <ms> ms (<n> runs)' line in litert-benchmark's output")
    out["runs"] = int(runs.group(1))
    accelerated = re.search(r"^Fully accelerated:\s+(True|False)", text, re.M)
    out["fully_accelerated"] = None if accelerated is None else accelerated.group(1) == "True"
    return out


def run_litert_benchmark(executable: str, model_path: str | Path, threads: int, warmup_runs: int, runs: int,
                         timeout: float = 600) -> dict:
    """``litert-benchmark`` on one model at one thread count (CPU, XNNPACK), parsed."""
    argv = [executable, f"--model={model_path}", f"--num_threads={threads}", f"--warmup_runs={warmup_runs}",
            f"--num_runs={runs}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit {proc.returncode}")
        return parse_litert_benchmark(proc.stdout)
    except ValueError as error:
        raise RuntimeError(f"litert-benchmark on {model_path} ({threads} threads) failed: {error}:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}") from None


# ----------------------------------------------------------------------------- statistics and report


def _percentile(samples: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(samples, float), q))


def _sidecar(path: Path) -> dict:
    side = path.with_name(path.name + ".json")
    if side.exists():
        try:
            return json.loads(side.read_text())
        except (OSError, ValueError):
            return {}
    return {}


def _source_run(sidecar: dict) -> str | None:
    """``experiment/run`` of the run a model was exported from (None if unknown)."""
    source = sidecar.get("source") or {}
    if source.get("experiment") and source.get("run"):
        return f"{source['experiment']}/{source['run']}"
    return source.get("run_dir")


def _machine() -> dict:
    cpu = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        cpu = fields.get("Model name", cpu).strip()
        flags = fields.get("Flags", "")
        simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        simd = []
    try:
        from importlib import metadata

        litert = metadata.version("ai-edge-litert")
    except Exception:  # pylint: disable=broad-except
        litert = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "simd": simd, "platform": platform.platform(),
            "python": platform.python_version(), "ai_edge_litert": litert}


def _architecture(path: Path) -> str | None:
    from tfq_noise.deploy.flatbuffer import architecture  # the parent only: the worker imports no tfq_noise

    try:
        return architecture(path.read_bytes())
    except Exception:  # pylint: disable=broad-except
        return None  # unknown: compared with nothing


def summarize_model(path: Path, raw_rounds: list[dict], threads: Sequence[int], batch: int,
                    cross_rounds: list[dict] | None = None) -> dict:
    side = _sidecar(path)
    first = raw_rounds[0]
    entry: dict = {
        "model": str(path),
        "name": path.name,
        "kind": side.get("kind") or ("float32" if first["input_dtype"].startswith("float") else "int8"),
        "input_dtype": first["input_dtype"],
        "source_run": _source_run(side),
        "architecture": _architecture(path),
        "size_bytes": path.stat().st_size,
        "latency_ms": {},
        "throughput_images_per_s": {},
        "xnnpack": first["xnnpack"],
        "xnnpack_applied": all(x["applied"] for x in first["xnnpack"].values()) and first["xnnpack_logged"],
        "peak_rss_delta_mb_batch1": max(r["peak_rss_delta_bytes_batch1"] for r in raw_rounds) / 2**20,
    }
    if "peak_rss_delta_bytes_batch" in first:
        entry[f"peak_rss_delta_mb_batch{batch}"] = max(r["peak_rss_delta_bytes_batch"] for r in raw_rounds) / 2**20
    for n in threads:
        samples = [s for r in raw_rounds for s in r["latency_samples_ms"][str(n)]]
        entry["latency_ms"][str(n)] = {"median": _percentile(samples, 50), "p90": _percentile(samples, 90),
                                       "min": min(samples), "runs": len(samples)}
        if cross_rounds:  # litert-benchmark's average of each round, pooled (same runs per round)
            theirs = [r[str(n)] for r in cross_rounds]
            mean, avg = sum(samples) / len(samples), sum(t["avg_ms"] for t in theirs) / len(theirs)
            entry.setdefault("cross_check", {})[str(n)] = {
                "ours_mean_ms": mean, "litert_benchmark_avg_ms": avg, "litert_benchmark_over_ours": avg / mean,
                "litert_benchmark_runs": sum(t["runs"] for t in theirs), "litert_benchmark_rounds": theirs}
        batch_samples = [s for r in raw_rounds for s in r["batch_samples_ms"].get(str(n), [])]
        if batch_samples:
            entry["throughput_images_per_s"][str(n)] = batch / (_percentile(batch_samples, 50) / 1000.0)
    return entry


def _is_float(entry: dict) -> bool:
    return entry["input_dtype"].startswith("float")


def compare(entries: list[dict], threads: Sequence[int], reference: str | None = None) -> list[dict]:
    """int8 vs float32 ratios and the targets, per non-float model, against a model of its architecture."""
    comparisons = []
    for entry in entries:
        if _is_float(entry):
            continue
        same = [e for e in entries if e["architecture"] is not None and e["architecture"] == entry["architecture"]]
        floats = [e for e in same if _is_float(e)]
        ref, how = None, ""
        if reference:
            ref = next((e for e in same if e["model"] == reference or e["name"] == Path(reference).name), None)
            how = "--reference"
        if ref is None and entry["source_run"]:
            ref = next((e for e in floats if e["source_run"] == entry["source_run"]), None)
            how = "float32 export of the same run"
        if ref is None and floats:
            ref, how = floats[0], "first float32 model given"
        if ref is None:
            continue
        one = str(min(threads))
        item = {
            "model": entry["name"], "reference": ref["name"], "reference_chosen_by": how,
            "architecture": entry["architecture"],
            "size_ratio": entry["size_bytes"] / ref["size_bytes"],
            "latency_ratio": {n: entry["latency_ms"][n]["median"] / ref["latency_ms"][n]["median"]
                              for n in entry["latency_ms"] if n in ref["latency_ms"]},
            "throughput_ratio": {n: entry["throughput_images_per_s"][n] / ref["throughput_images_per_s"][n]
                                 for n in entry["throughput_images_per_s"] if n in ref["throughput_images_per_s"]},
        }
        item["latency_target"] = {"threads": int(one), "max_ratio": LATENCY_TARGET,
                                  "ratio": item["latency_ratio"].get(one),
                                  "met": item["latency_ratio"].get(one, float("inf")) <= LATENCY_TARGET}
        item["size_target"] = {"max_ratio": SIZE_TARGET, "ratio": item["size_ratio"],
                               "met": item["size_ratio"] <= SIZE_TARGET}
        if "cross_check" in entry and "cross_check" in ref:  # by both timers, same models
            a, b = entry["cross_check"], ref["cross_check"]
            lb = "litert_benchmark_avg_ms"
            item["cross_check_latency_ratio"] = {n: {
                "ours_mean": a[n]["ours_mean_ms"] / b[n]["ours_mean_ms"],
                "litert_benchmark": a[n][lb] / b[n][lb] if b[n][lb] > 0 else None} for n in a if n in b}
        comparisons.append(item)
    return comparisons


def format_table(entries: list[dict], comparisons: list[dict], threads: Sequence[int], batch: int) -> str:
    by_model = {c["model"]: c for c in comparisons}
    cross = any("cross_check" in e for e in entries)
    header = ["model", "kind", "size KB"]
    for n in threads:
        header += [f"p50 {n}t ms", f"p90 {n}t ms"] + ([f"mean {n}t ms", f"litert-bm {n}t ms"] if cross else [])
    header += [f"b{batch} {n}t img/s" for n in threads]
    header += ["peak MB", "XNNPACK", "lat ratio", "size ratio"]
    rows = [header]
    for e in entries:
        row = [e["name"], e["kind"], f"{e['size_bytes'] / 1024:.1f}"]
        for n in threads:
            lat = e["latency_ms"][str(n)]
            row += [f"{lat['median']:.3f}", f"{lat['p90']:.3f}"]
            if cross:
                cc = e.get("cross_check", {}).get(str(n))
                row += [f"{cc['ours_mean_ms']:.3f}", f"{cc['litert_benchmark_avg_ms']:.2f}"] if cc else ["", ""]
        row += [f"{e['throughput_images_per_s'].get(str(n), float('nan')):.0f}" for n in threads]
        x = e["xnnpack"][str(threads[0])]
        peak = e.get(f"peak_rss_delta_mb_batch{batch}", e["peak_rss_delta_mb_batch1"])
        row += [f"{peak:.1f}",
                f"{'yes' if e['xnnpack_applied'] else 'no'} {x['delegated_ops']}/{x['total_ops']}"]
        c = by_model.get(e["name"])
        if c:
            lt, st = c["latency_target"], c["size_target"]
            row += [f"{lt['ratio']:.2f}{' ok' if lt['met'] else ' MISS'}",
                    f"{st['ratio']:.4f}{' ok' if st['met'] else ' MISS'}"]
        else:
            row += ["ref", "ref"] if _is_float(e) else ["-", "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def benchmark(models: Sequence[str | Path], threads: Sequence[int] = (1, 2), warmup_runs: int = 50,
              runs: int = 500, batch: int = 32, batch_runs: int = 20, rounds: int = 1,
              reference: str | None = None, cross_check: str | None = None) -> dict:
    """``cross_check``: the ``litert-benchmark`` executable to time every model with too (None: not)."""
    paths = [Path(m) for m in models]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such model file(s): {missing}")
    if not paths:
        raise ValueError("no models given")
    load_before = os.getloadavg()
    start = time.time()
    raw: dict[Path, list[dict]] = {p: [] for p in paths}
    cross: dict[Path, list[dict]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p in paths:
            raw[p].append(run_worker(p, threads, warmup_runs, runs, batch, batch_runs))
            if cross_check:
                cross[p].append({str(n): run_litert_benchmark(cross_check, p, n, warmup_runs, runs) for n in threads})
    entries = [summarize_model(p, raw[p], threads, batch, cross[p]) for p in paths]
    comparisons = compare(entries, threads, reference)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": round(time.time() - start, 1),
        "settings": {"threads": list(threads), "warmup_runs": warmup_runs, "runs": runs, "batch": batch,
                     "batch_runs": batch_runs, "rounds": rounds,
                     "delegates": "LiteRT defaults (XNNPACK on CPU)",
                     "memory": "VmHWM (reset before loading) minus VmRSS before loading the model, "
                               "fresh subprocess per model",
                     "cross_check": {"tool": "litert-benchmark", "executable": cross_check,
                                     "compared": "its average (printed to 0.01 ms) vs the mean of our samples"}
                     if cross_check else None},
        "targets": {"int8_latency_ratio_1_thread_max": LATENCY_TARGET, "int8_size_ratio_max": SIZE_TARGET},
        "models": entries,
        "comparisons": comparisons,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfq_noise.deploy.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--output", default=None,
                   help="write the JSON report here (default: print only; no file is written or overwritten)")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--warmup_runs", type=int, default=50)
    p.add_argument("--runs", type=int, default=500, help="timed batch-1 invocations per thread count")
    p.add_argument("--batch", type=int, default=32, help="batch size of the throughput measurement")
    p.add_argument("--batch_runs", type=int, default=20, help="timed invocations at that batch size")
    p.add_argument("--rounds", type=int, default=1, help="round-robin repetitions over the models")
    p.add_argument("--reference", default=None, help="the float32 model to compare int8 models with")
    p.add_argument("--cross_check", action="store_true",
                   help="also time every model with litert-benchmark (same threads, warm-up and runs)")
    p.add_argument("--litert_benchmark", default="litert-benchmark", help="the litert-benchmark executable")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from tfq_noise.deploy.flatbuffer import check_model_file

    args = _parser().parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
        for model in [*args.models, *([args.reference] if args.reference else [])]:
            check_model_file(model)
        cross_check = shutil.which(args.litert_benchmark) if args.cross_check else None
        if args.cross_check and cross_check is None:
            raise ValueError(f"--cross_check: {args.litert_benchmark!r} is not an executable on PATH "
                             "(ai-edge-litert 2.3.0 installs litert-benchmark; or pass --litert_benchmark=PATH)")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        report = benchmark(args.models, threads, args.warmup_runs, args.runs, args.batch, args.batch_runs,
                           args.rounds, args.reference, cross_check)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    output = Path(args.output) if args.output else None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".tmp-{output.name}")
        partial.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        os.replace(partial, output)  # never half a report
    m = report["machine"]
    print(f"{m['cpu']} ({m['cpu_count']} CPUs, {','.join(m['simd'])}), ai-edge-litert {m['ai_edge_litert']}, "
          f"{report['date']}, load average before {report['load_average_before'][0]:.2f}")
    print(format_table(report["models"], report["comparisons"], threads, args.batch))
    for c in report["comparisons"]:
        lt, st = c["latency_target"], c["size_target"]
        print(f"{c['model']} vs {c['reference']} ({c['reference_chosen_by']}): latency {lt['ratio']:.3f}x at "
              f"{lt['threads']} thread (target <= {LATENCY_TARGET}: {'met' if lt['met'] else 'NOT met'}), "
              f"size {st['ratio']:.4f}x (target <= {SIZE_TARGET}: {'met' if st['met'] else 'NOT met'})")
        for n, r in c.get("cross_check_latency_ratio", {}).items():
            lb = "n/a" if r["litert_benchmark"] is None else f"{r['litert_benchmark']:.3f}x"
            print(f"  cross-check, {n} thread(s): latency {r['ours_mean']:.3f}x by our mean, {lb} by litert-benchmark")
    print(f"wrote {output}" if output is not None else "not written (pass --output=PATH to keep the report)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_worker":
        spec = json.loads(sys.argv[2])
        print(json.dumps(measure(**spec)))
        sys.exit(0)
    sys.exit(main())

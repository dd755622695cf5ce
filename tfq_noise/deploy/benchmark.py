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
or ``--reference``; an int8 model without one is listed with what is missing
(``not_compared``). Targets, reported met or not for ResNet20 only (the network
they were set for, named from the export report): int8 latency at 1 thread
<= 0.30x the float32 one, int8 file <= 0.28x. Other networks get ratios only.

Every model is checked before anything is timed (exit 2, nothing written): a
TFLite file, of the size and SHA-256 its export report records, that LiteRT
loads and runs once in a subprocess; and so are the settings (threads, runs,
batch, rounds >= 1) and ``--output`` (its folder must take a new file).

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

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from tfq_noise.deploy import checks
from tfq_noise.deploy.bench_worker import delegation, measure  # noqa: F401  (the worker's API, re-exported)
from tfq_noise.deploy.cross_check import parse_litert_benchmark, run_litert_benchmark  # noqa: F401

LATENCY_TARGET = 0.30
SIZE_TARGET = 0.28
# The targets were set for ResNet20 on CIFAR-10 (the committed models); other networks get ratios, no target.
TARGET_NETWORK = "ResNet20"
TARGETS = {TARGET_NETWORK: {"int8_latency_ratio_1_thread_max": LATENCY_TARGET, "int8_size_ratio_max": SIZE_TARGET}}

_WORKER = Path(__file__).resolve().with_name("bench_worker.py")


def run_worker(model_path: str | Path, threads: Sequence[int], warmup_runs: int, runs: int, batch: int,
               batch_runs: int, timeout: float = 600) -> dict:
    """``measure`` in a fresh Python process; adds whether LiteRT logged the XNNPACK delegate."""
    spec = json.dumps({"model_path": str(model_path), "threads": list(threads), "warmup_runs": warmup_runs,
                       "runs": runs, "batch": batch, "batch_runs": batch_runs})
    proc = subprocess.run([sys.executable, "-P", str(_WORKER), "--_worker", spec],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {model_path} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["xnnpack_logged"] = "XNNPACK delegate" in proc.stderr
    return result


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


def network(sidecar: dict) -> str | None:
    """The network a model was exported from, by name (``ResNet20``, ``ResNet8``, ``MobileNetV2 (alpha=0.35)``),
    from its export report; None without one."""
    source = sidecar.get("source") or {}
    model, kwargs = source.get("model"), dict(source.get("model_kwargs") or {})
    if not model:
        return None
    if model == "resnet20":
        blocks, width = kwargs.pop("blocks_per_stage", 3), kwargs.pop("base_filters", 16)
        shape = {k: v for k, v in kwargs.items() if k in ("batchnorm",) and v is False}
        extra = ([f"base_filters={width}"] if width != 16 else []) + [f"{k}={v}" for k, v in shape.items()]
        return f"ResNet{6 * int(blocks) + 2}" + (f" ({', '.join(extra)})" if extra else "")
    shape = {k: v for k, v in kwargs.items() if k in ("alpha", "width", "depth", "blocks_per_stage")}
    return model + (f" ({', '.join(f'{k}={v}' for k, v in sorted(shape.items()))})" if shape else "")


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
        "network": network(side),
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
        item["network"] = entry.get("network")
        if entry.get("network") in TARGETS and ref.get("network") == entry.get("network"):
            item["latency_target"] = {"threads": int(one), "max_ratio": LATENCY_TARGET,
                                      "ratio": item["latency_ratio"].get(one),
                                      "met": item["latency_ratio"].get(one, float("inf")) <= LATENCY_TARGET}
            item["size_target"] = {"max_ratio": SIZE_TARGET, "ratio": item["size_ratio"],
                                   "met": item["size_ratio"] <= SIZE_TARGET}
        else:
            item["latency_target"] = item["size_target"] = None
            item["targets_not_applied"] = (
                f"the targets are set for {TARGET_NETWORK}; this is "
                + (entry["network"] if entry.get("network") else "a network of unknown name (no export report)"))
        if "cross_check" in entry and "cross_check" in ref:  # by both timers, same models
            a, b = entry["cross_check"], ref["cross_check"]
            lb = "litert_benchmark_avg_ms"
            item["cross_check_latency_ratio"] = {n: {
                "ours_mean": a[n]["ours_mean_ms"] / b[n]["ours_mean_ms"],
                "litert_benchmark": a[n][lb] / b[n][lb] if b[n][lb] > 0 else None} for n in a if n in b}
        comparisons.append(item)
    return comparisons


NO_FLOAT = "no float32"


def not_compared(entries: list[dict], comparisons: list[dict]) -> list[dict]:
    """The integer models that got no ratio, and what is missing."""
    done = {c["model"] for c in comparisons}
    out = []
    for e in entries:
        if _is_float(e) or e["name"] in done:
            continue
        what = ("its architecture could not be read from the file" if e["architecture"] is None else
                "no float32 model of the same architecture was given")
        out.append({"model": e["name"], "missing": what,
                    "fix": "export its run with --kind=float32 too and pass both files (or name the float32 file "
                           "with --reference)"})
    return out


def _ratio_cell(ratio, target, digits: int) -> str:
    if ratio is None:
        return "n/a"
    text = f"{ratio:.{digits}f}x"
    return text + ("" if target is None else (" ok" if target["met"] else " MISS"))


def format_table(entries: list[dict], comparisons: list[dict], threads: Sequence[int], batch: int) -> str:
    by_model = {c["model"]: c for c in comparisons}
    cross = any("cross_check" in e for e in entries)
    header = ["model", "kind", "size KB"]
    for n in threads:
        header += [f"p50 {n}t ms", f"p90 {n}t ms"] + ([f"mean {n}t ms", f"litert-bm {n}t ms"] if cross else [])
    header += [f"b{batch} {n}t img/s" for n in threads]
    header += ["peak MB", "XNNPACK", f"lat ratio {min(threads)}t", "size ratio"]
    rows = [header]
    for e in entries:
        row = [e["name"], e["kind"], f"{e['size_bytes'] / 1024:.1f}"]
        for n in threads:
            lat = e["latency_ms"][str(n)]
            row += [f"{lat['median']:.3f}", f"{lat['p90']:.3f}"]
            if cross:
                cc = e.get("cross_check", {}).get(str(n))
                row += [f"{cc['ours_mean_ms']:.3f}", f"{cc['litert_benchmark_avg_ms']:.2f}"] if cc else ["", ""]
        row += [f"{e['throughput_images_per_s'][str(n)]:.0f}" if str(n) in e["throughput_images_per_s"] else "n/a"
                for n in threads]
        x = e["xnnpack"][str(threads[0])]
        peak = e.get(f"peak_rss_delta_mb_batch{batch}", e["peak_rss_delta_mb_batch1"])
        row += [f"{peak:.1f}",
                f"{'yes' if e['xnnpack_applied'] else 'no'} {x['delegated_ops']}/{x['total_ops']}"]
        c = by_model.get(e["name"])
        if c:
            row += [_ratio_cell(c["latency_ratio"].get(str(min(threads))), c["latency_target"], 2),
                    _ratio_cell(c["size_ratio"], c["size_target"], 4)]
        else:
            row += ["reference", "reference"] if _is_float(e) else [NO_FLOAT, NO_FLOAT]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def check_settings(threads: Sequence[int], warmup_runs: int, runs: int, batch: int, batch_runs: int,
                   rounds: int) -> None:
    """Raises :class:`~tfq_noise.deploy.checks.InputError` for settings LiteRT would abort on or that time nothing."""
    bad = [f"{name}={value}" for name, value, low in (
        ("warmup_runs", warmup_runs, 0), ("runs", runs, 1), ("batch", batch, 1), ("batch_runs", batch_runs, 0),
        ("rounds", rounds, 1)) if not isinstance(value, int) or value < low]
    if not threads or any(not isinstance(n, int) or n < 1 for n in threads):
        bad.insert(0, f"threads={list(threads)}")
    if bad:
        raise checks.InputError(f"bad benchmark settings {', '.join(bad)}: threads, runs, batch and rounds must be "
                                ">= 1, warmup_runs and batch_runs >= 0")


def benchmark(models: Sequence[str | Path], threads: Sequence[int] = (1, 2), warmup_runs: int = 50,
              runs: int = 500, batch: int = 32, batch_runs: int = 20, rounds: int = 1,
              reference: str | None = None, cross_check: str | None = None) -> dict:
    """``cross_check``: the ``litert-benchmark`` executable to time every model with too (None: not).
    Bad settings or models raise :class:`~tfq_noise.deploy.checks.InputError` before anything is timed."""
    threads = list(threads)
    check_settings(threads, warmup_runs, runs, batch, batch_runs, rounds)
    paths = [Path(m) for m in models]
    if not paths:
        raise checks.InputError("no models given")
    checks.check_models(paths)
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
        "settings": {"threads": threads, "warmup_runs": warmup_runs, "runs": runs, "batch": batch,
                     "batch_runs": batch_runs, "rounds": rounds,
                     "delegates": "LiteRT defaults (XNNPACK on CPU)",
                     "memory": "VmHWM (reset before loading) minus VmRSS before loading the model, "
                               "fresh subprocess per model",
                     "cross_check": {"tool": "litert-benchmark", "executable": cross_check,
                                     "compared": "its average (printed to 0.01 ms) vs the mean of our samples"}
                     if cross_check else None},
        "targets": {"network": TARGET_NETWORK, **TARGETS[TARGET_NETWORK],
                    "applied": f"only to int8 models of {TARGET_NETWORK} against a float32 {TARGET_NETWORK}"},
        "models": entries,
        "comparisons": comparisons,
        "not_compared": not_compared(entries, comparisons),
    }


def _parser() -> checks.Parser:
    p = checks.Parser(prog="python -m tfq_noise.deploy.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--output", default=None,
                   help="write the JSON report here (default: print only; no file is written or overwritten)")
    p.add_argument("--threads", type=checks.int_list, default=[1, 2],
                   help="thread counts, comma-separated, each >= 1 (default: 1,2)")
    p.add_argument("--warmup_runs", type=checks.non_negative_int, default=50, help="untimed invocations first")
    p.add_argument("--runs", type=checks.positive_int, default=500,
                   help="timed batch-1 invocations per thread count")
    p.add_argument("--batch", type=checks.positive_int, default=32,
                   help="batch size of the throughput measurement (1: none)")
    p.add_argument("--batch_runs", type=checks.non_negative_int, default=20,
                   help="timed invocations at that batch size (0: none)")
    p.add_argument("--rounds", type=checks.positive_int, default=1, help="round-robin repetitions over the models")
    p.add_argument("--reference", default=None,
                   help="the float32 model to compare int8 models with (default: the float32 export of the same "
                        "run, else the first float32 model of the same architecture)")
    p.add_argument("--cross_check", action="store_true",
                   help="also time every model with litert-benchmark (same threads, warm-up and runs)")
    p.add_argument("--litert_benchmark", default="litert-benchmark", help="the litert-benchmark executable")
    return p


def _print_report(report: dict, threads: Sequence[int], batch: int) -> None:
    m = report["machine"]
    print(f"{m['cpu']} ({m['cpu_count']} CPUs, {','.join(m['simd'])}), ai-edge-litert {m['ai_edge_litert']}, "
          f"{report['date']}, load average before {report['load_average_before'][0]:.2f}")
    print(format_table(report["models"], report["comparisons"], threads, batch))
    for c in report["comparisons"]:
        one = str(min(threads))
        latency = c["latency_ratio"].get(one)
        text = (f"{c['model']} vs {c['reference']} ({c['reference_chosen_by']}): latency "
                f"{'n/a' if latency is None else f'{latency:.3f}x'} at {one} thread(s), size {c['size_ratio']:.4f}x")
        lt, st = c["latency_target"], c["size_target"]
        if lt is not None:
            text += (f" (targets for {TARGET_NETWORK}: latency <= {LATENCY_TARGET}: {'met' if lt['met'] else 'NOT met'}"
                     f", size <= {SIZE_TARGET}: {'met' if st['met'] else 'NOT met'})")
        else:
            text += f" (no target: {c['targets_not_applied']})"
        print(text)
        for n, r in c.get("cross_check_latency_ratio", {}).items():
            lb = "n/a" if r["litert_benchmark"] is None else f"{r['litert_benchmark']:.3f}x"
            print(f"  cross-check, {n} thread(s): latency {r['ours_mean']:.3f}x by our mean, {lb} by litert-benchmark")
    for item in report["not_compared"]:
        print(f"{item['model']}: no int8/float32 ratios: {item['missing']}; {item['fix']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    output = None
    try:
        models = list(args.models)
        if args.reference and Path(args.reference).resolve() not in {Path(m).resolve() for m in models}:
            models.append(args.reference)  # timed too: a ratio needs both
        check_settings(args.threads, args.warmup_runs, args.runs, args.batch, args.batch_runs, args.rounds)
        if args.output:
            output = checks.check_output(args.output)
        cross_check = shutil.which(args.litert_benchmark) if args.cross_check else None
        if args.cross_check and cross_check is None:
            raise checks.InputError(f"--cross_check: {args.litert_benchmark!r} is not an executable on PATH "
                                    "(ai-edge-litert 2.3.0 installs litert-benchmark; or pass --litert_benchmark=PATH)")
    except checks.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return checks.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return checks.EXIT_INTERRUPTED
    try:
        report = benchmark(models, args.threads, args.warmup_runs, args.runs, args.batch, args.batch_runs,
                           args.rounds, args.reference, cross_check)
        if output is not None:
            from tfq_noise import results

            results.atomic_write_text(output, json.dumps(report, indent=2, sort_keys=True) + "\n")  # never half
    except checks.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return checks.EXIT_BAD_INPUT
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
        print(f"error: benchmark failed: {_one_line(error)}", file=sys.stderr)
        return checks.EXIT_FAILED
    except OSError as error:
        print(f"error: cannot write the report to {output}: {error.strerror or error}; nothing was written",
              file=sys.stderr)
        return checks.EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted; no report was written", file=sys.stderr)
        return checks.EXIT_INTERRUPTED
    _print_report(report, args.threads, args.batch)
    print(f"wrote {output}" if output is not None else "not written (pass --output=PATH to keep the report)")
    return 0


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.startswith("INFO:")]
    return " | ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else (lines[0] if lines else type(error).__name__)


if __name__ == "__main__":
    sys.exit(main())

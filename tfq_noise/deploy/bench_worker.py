"""The benchmark's worker: times one .tflite in this process. Imports only numpy and ai_edge_litert.

:mod:`tfq_noise.deploy.benchmark` runs it as ``python -P bench_worker.py --_worker SPEC`` in a fresh process
per model (see there for what is measured): the process holds no TensorFlow, and its peak memory is the
model's.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Sequence


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

    if not threads or min(threads) < 1 or runs < 1 or warmup_runs < 0 or batch < 1 or batch_runs < 0:
        # LiteRT aborts the process (C++ CHECK) on num_threads < 1: refuse here too, in words.
        raise ValueError(f"threads must be >= 1 (got {list(threads)}), runs >= 1, warmup_runs >= 0, batch >= 1 "
                         "and batch_runs >= 0")
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


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_worker":
        print(json.dumps(measure(**json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit("usage: python -P bench_worker.py --_worker SPEC (run by tfq_noise.deploy.benchmark)")

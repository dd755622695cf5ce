"""``litert-benchmark`` (LiteRT's own timer, installed by ai-edge-litert 2.3.0): runs it and reads its output,
for ``python -m tfq_noise.deploy.benchmark --cross_check``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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

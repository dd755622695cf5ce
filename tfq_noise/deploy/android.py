"""Benchmarks .tflite models on an Android device with LiteRT's ``benchmark_model`` over adb.

    python -m tfq_noise.deploy.android tflite_models/*.tflite \\
        --benchmark_binary=/path/to/android_aarch64_benchmark_model \\
        [--num_threads=1,4] [--use_xnnpack=true] [--warmup_runs=50] [--num_runs=200] \\
        [--use_gpu] [--use_nnapi] [--serial=SERIAL] [--adb=adb] [--output=android_benchmark.json]

This cannot run on the project's machines (no Android device, no adb there):
it was tested only through the command lines it builds (which are data, see
:func:`build_plan`) and the parsing of recorded ``benchmark_model`` output.

Steps, per device: check ``adb`` and ``adb devices``; push the binary to
``/data/local/tmp/tfq_noise/benchmark_model`` and ``chmod +x`` it; then per
model push it and run, per thread count::

    adb [-s SERIAL] shell /data/local/tmp/tfq_noise/benchmark_model \\
        --graph=/data/local/tmp/tfq_noise/<model>.tflite --num_threads=N \\
        --use_xnnpack=true --warmup_runs=W --num_runs=R [--use_gpu=true] [--use_nnapi=true]

The binary is LiteRT's prebuilt ``benchmark_model`` for Android (e.g.
``android_aarch64_benchmark_model``), supplied by the user. Its output is
parsed into JSON: ``Inference timings in us: Init, First inference, Warmup
(avg), Inference (avg)``, the statistics line of the timed runs (``count=
first= curr= min= max= avg= std=`` and, in recent versions, ``p5= median=
p95=``), memory footprint lines, and which delegate was applied.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

DEVICE_DIR = "/data/local/tmp/tfq_noise"


class AndroidBenchmarkError(RuntimeError):
    """adb, the device or benchmark_model is missing or failed."""


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
    """The ``benchmark_model`` flags that matter here."""

    num_threads: int = 1
    use_xnnpack: bool = True
    warmup_runs: int = 50
    num_runs: int = 200
    use_gpu: bool = False
    use_nnapi: bool = False
    extra_args: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("num_threads", "num_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_runs < 0:
            raise ValueError(f"warmup_runs must be >= 0, got {self.warmup_runs}")
        if self.use_gpu and self.use_nnapi:
            raise ValueError("choose one of use_gpu and use_nnapi")

    def flags(self) -> list[str]:
        flags = [
            f"--num_threads={self.num_threads}",
            f"--use_xnnpack={'true' if self.use_xnnpack else 'false'}",
            f"--warmup_runs={self.warmup_runs}",
            f"--num_runs={self.num_runs}",
        ]
        if self.use_gpu:
            flags.append("--use_gpu=true")
        if self.use_nnapi:
            flags.append("--use_nnapi=true")
        return flags + list(self.extra_args)


def adb_prefix(adb: str, serial: str | None = None) -> list[str]:
    return [adb, "-s", serial] if serial else [adb]


def remote_path(local: str | Path, device_dir: str = DEVICE_DIR) -> str:
    return f"{device_dir}/{Path(local).name}"


def benchmark_command(adb: str, model: str | Path, options: BenchmarkOptions, serial: str | None = None,
                      device_dir: str = DEVICE_DIR) -> list[str]:
    """The ``adb shell benchmark_model ...`` command line for a pushed model."""
    remote = [f"{device_dir}/benchmark_model", f"--graph={remote_path(model, device_dir)}", *options.flags()]
    # adb shell re-splits its arguments with the device's shell: quote them as one string.
    return [*adb_prefix(adb, serial), "shell", shlex.join(remote)]


def build_plan(adb: str, binary: str | Path, models: Sequence[str | Path], options: Sequence[BenchmarkOptions],
               serial: str | None = None, device_dir: str = DEVICE_DIR) -> list[dict]:
    """Every adb command of a session, as data: ``{"step", "model", "options", "argv"}``."""
    prefix = adb_prefix(adb, serial)
    plan = [
        {"step": "mkdir", "argv": [*prefix, "shell", shlex.join(["mkdir", "-p", device_dir])]},
        {"step": "push_binary", "argv": [*prefix, "push", str(binary), f"{device_dir}/benchmark_model"]},
        {"step": "chmod", "argv": [*prefix, "shell", shlex.join(["chmod", "+x", f"{device_dir}/benchmark_model"])]},
    ]
    for model in models:
        plan.append({"step": "push_model", "model": str(model),
                     "argv": [*prefix, "push", str(model), remote_path(model, device_dir)]})
        for option in options:
            plan.append({"step": "benchmark", "model": str(model), "options": dataclasses.asdict(option),
                         "argv": benchmark_command(adb, model, option, serial, device_dir)})
    return plan


def find_adb(adb: str | None = None) -> str:
    """The adb executable, or a clear error."""
    candidate = adb or "adb"
    path = shutil.which(candidate)
    if path is None:
        raise AndroidBenchmarkError(
            f"adb not found ({candidate!r} is not an executable on PATH): install Android platform-tools "
            "or pass --adb=/path/to/adb"
        )
    return path


def check_binary(binary: str | Path | None) -> Path:
    if not binary:
        raise AndroidBenchmarkError("--benchmark_binary is required: the path to LiteRT's benchmark_model for "
                                    "Android (e.g. android_aarch64_benchmark_model)")
    path = Path(binary)
    if not path.is_file():
        raise AndroidBenchmarkError(f"benchmark_model binary not found at {path}")
    return path


def parse_devices(text: str) -> list[str]:
    """Serials of devices in state ``device`` from ``adb devices`` output."""
    serials = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "device":
            serials.append(parts[0])
    return serials


def choose_device(devices_output: str, serial: str | None = None) -> str:
    serials = parse_devices(devices_output)
    if not serials:
        raise AndroidBenchmarkError("no Android device: `adb devices` lists none in state 'device' "
                                    "(connect one, enable USB debugging and accept the host key)")
    if serial:
        if serial not in serials:
            raise AndroidBenchmarkError(f"device {serial!r} not connected; connected: {serials}")
        return serial
    if len(serials) > 1:
        raise AndroidBenchmarkError(f"several devices connected ({serials}): choose one with --serial")
    return serials[0]


_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_benchmark_output(text: str) -> dict:
    """``benchmark_model`` output → numbers (latencies in ms, memory in MB). Raises if no timings."""
    timings = re.search(
        rf"Inference timings in us:\s*Init:\s*{_NUMBER},\s*First inference:\s*{_NUMBER},\s*"
        rf"Warmup \(avg\):\s*{_NUMBER},\s*Inference \(avg\):\s*{_NUMBER}", text)
    if timings is None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise AndroidBenchmarkError(f"benchmark_model printed no 'Inference timings' line; its output ended:\n{tail}")
    init, first, warmup, avg = (float(g) for g in timings.groups())
    out: dict = {"init_ms": init / 1000, "first_inference_ms": first / 1000, "warmup_avg_ms": warmup / 1000,
                 "inference_avg_ms": avg / 1000}
    stats = re.findall(r"count=\d+[^\n]*", text)
    if stats:  # the last statistics line is the timed runs'
        fields = dict(re.findall(rf"(\w+)={_NUMBER}", stats[-1]))
        out["runs"] = int(float(fields["count"])) if "count" in fields else None
        for key in ("min", "max", "avg", "std", "p5", "median", "p95"):
            if key in fields:
                out[f"inference_{key}_ms"] = float(fields[key]) / 1000
    size = re.search(rf"input model file size \(MB\):\s*{_NUMBER}", text, re.IGNORECASE)
    if size:
        out["model_size_mb"] = float(size.group(1))
    memory = re.search(rf"Memory footprint delta from the start of the tool \(MB\):\s*init={_NUMBER}\s+"
                       rf"overall={_NUMBER}", text)
    if memory:
        out["memory_delta_init_mb"], out["memory_delta_overall_mb"] = float(memory.group(1)), float(memory.group(2))
    peak = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*{_NUMBER}", text)
    if peak:
        out["peak_memory_mb"] = float(peak.group(1))
    delegate = re.search(r"Explicitly applied (\w+) delegate, and the model graph will be (completely|partially) "
                         r"executed by the delegate(?: w/ (\d+) delegate kernels)?", text)
    if delegate:
        out["delegate"] = {"name": delegate.group(1), "coverage": delegate.group(2),
                           "kernels": int(delegate.group(3)) if delegate.group(3) else None}
    elif re.search(r"XNNPACK delegate", text):
        out["delegate"] = {"name": "XNNPACK", "coverage": "unknown", "kernels": None}
    return out


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _default_runner(argv: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=1800)


def run_benchmarks(models: Sequence[str | Path], binary: str | Path | None, options: Sequence[BenchmarkOptions],
                   adb: str | None = None, serial: str | None = None, runner: Runner | None = None,
                   device_dir: str = DEVICE_DIR) -> dict:
    """Runs the plan on a device; ``runner`` executes one argv (tests pass a fake one)."""
    runner = runner or _default_runner
    binary_path = check_binary(binary)
    missing = [str(m) for m in models if not Path(m).is_file()]
    if missing:
        raise AndroidBenchmarkError(f"model file(s) not found: {missing}")
    adb_path = find_adb(adb) if runner is _default_runner else (adb or "adb")
    devices = runner([adb_path, "devices"])
    if devices.returncode != 0:
        raise AndroidBenchmarkError(f"`adb devices` failed: {devices.stderr.strip()}")
    serial = choose_device(devices.stdout, serial)
    model_info = runner([*adb_prefix(adb_path, serial), "shell", "getprop ro.product.model"]).stdout.strip()
    abi = runner([*adb_prefix(adb_path, serial), "shell", "getprop ro.product.cpu.abi"]).stdout.strip()
    runs = []
    for step in build_plan(adb_path, binary_path, models, options, serial, device_dir):
        proc = runner(step["argv"])
        output = (proc.stdout or "") + (proc.stderr or "")
        if step["step"] != "benchmark":
            if proc.returncode != 0:
                raise AndroidBenchmarkError(f"{shlex.join(step['argv'])} failed: {output.strip()[-500:]}")
            continue
        entry = {"model": step["model"], "options": step["options"], "command": shlex.join(step["argv"])}
        try:
            entry.update(parse_benchmark_output(output))
        except AndroidBenchmarkError as error:
            entry["error"] = str(error)
        runs.append(entry)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": {"serial": serial, "model": model_info, "abi": abi}, "runs": runs}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfq_noise.deploy.android", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--benchmark_binary", default=None, help="LiteRT's benchmark_model built for Android")
    p.add_argument("--adb", default=None, help="adb executable (default: adb on PATH)")
    p.add_argument("--serial", default=None, help="device serial, when several are connected")
    p.add_argument("--num_threads", default="1", help="thread counts, comma-separated")
    p.add_argument("--use_xnnpack", type=_bool, default=True)
    p.add_argument("--warmup_runs", type=int, default=50)
    p.add_argument("--num_runs", type=int, default=200)
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--use_nnapi", action="store_true")
    p.add_argument("--output", default="android_benchmark.json")
    p.add_argument("--dry_run", action="store_true", help="print the adb commands and stop")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        options = [BenchmarkOptions(int(n), args.use_xnnpack, args.warmup_runs, args.num_runs, args.use_gpu,
                                    args.use_nnapi) for n in args.num_threads.split(",") if n.strip()]
        if args.dry_run:
            for step in build_plan(args.adb or "adb", args.benchmark_binary or "<benchmark_model>", args.models,
                                   options, args.serial):
                print(shlex.join(step["argv"]))
            return 0
        report = run_benchmarks(args.models, args.benchmark_binary, options, args.adb, args.serial)
    except (AndroidBenchmarkError, ValueError) as error:
        print(f"android benchmark failed: {error}", file=sys.stderr)
        return 1
    Path(args.output).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for run in report["runs"]:
        timing = f"{run['inference_avg_ms']:.3f} ms avg" if "inference_avg_ms" in run else run.get("error", "")
        print(f"{Path(run['model']).name} threads={run['options']['num_threads']}: {timing}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs exported .tflite models under an arm64 LiteRT (qemu user-mode emulation) and compares them with x86.

    python -m tfq_noise.deploy.arm64 setup [--root=~/.cache/tfq_noise/arm64]
    python -m tfq_noise.deploy.arm64 check tflite_models/*.tflite [--root=...] [--eval_images=0]
        [--kernels=default|reference] [--min_agreement=0.99] [--output=report.json]

Integer kernels differ between architectures (XNNPACK's x86 and NEON paths,
LiteRT's builtin kernels with or without their optimized variants), so an int8
model validated on x86 can predict other classes on a phone. This command
runs every model on the same images in two LiteRT processes, one native
(x86-64) and one arm64 under ``qemu-aarch64-static``, and reports, per model,
the top-1 agreement of the two, the share of images whose output tensors are
bit-identical, the largest output difference (in output quantization steps for
int8 models) and the test accuracy on each side. A model whose agreement falls
below ``--min_agreement`` fails the check (exit status 1).

Emulation is not a phone: it runs the arm64 *code* (instruction semantics are
exact), not an arm64 *machine*, and its timings mean nothing. No latency is
measured here; ``tfq_noise.deploy.android`` times a real device.

``setup`` builds what the arm64 side needs, once, under ``--root``:

1. ``sysroot/``: a Debian bookworm arm64 root from ``debootstrap --foreign``
   (its first stage, which downloads and unpacks without running arm64 code),
   with Python 3.11 (``python3-minimal``, ``libpython3.11-stdlib``) and
   ``libstdc++6`` unpacked from the downloaded packages;
2. ``site/``: the arm64 wheels of ``ai-edge-litert`` and numpy, at the
   versions installed on this machine, installed by this machine's pip
   (``--platform manylinux_2_27_aarch64 --python-version 3.11``).

It needs ``debootstrap``, ``dpkg-deb`` and ``qemu-aarch64-static`` >= 8.1 on
the host (Debian: ``apt-get install debootstrap qemu-user-static``; bookworm's
qemu 7.2 is too old: it shows arm64 programs the host's ``/proc/cpuinfo``, and
LiteRT's CPU detection crashes on an x86 one; bookworm-backports has 10.0), and
network access to a Debian mirror and the Python package index.

Inputs: the CIFAR-10 test set (``--cifar10_dir`` or ``$TFQ_NOISE_CIFAR10_DIR``)
or ``--images=file.npz`` (uint8 ``images`` [N, H, W, C] and ``labels`` [N]),
normalized with the ``source.normalization`` that the export wrote into each
model's ``<model>.tflite.json``, then quantized with the model's input scale
and zero point. Both sides get the same quantized arrays, in the same batches.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_ROOT = Path.home() / ".cache" / "tfq_noise" / "arm64"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SYSROOT_PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "libstdc++6")
ARM_PYTHON = "usr/bin/python3.11"
ARM_PYTHON_VERSION = "3.11"
WHEEL_PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64",
                   "manylinux_2_17_aarch64")
QEMU = "qemu-aarch64-static"
QEMU_MIN_VERSION = (8, 1)
DEFAULT_MIN_AGREEMENT = 0.99
BATCH = 100
KERNELS = ("default", "reference")


class Arm64Error(RuntimeError):
    """The arm64 environment is missing or broken, or a model could not be run."""


# ----------------------------------------------------------------------------- worker (both sides)


def run_batches(model_path: str, inputs_path: str, outputs_path: str, kernels: str, batch: int) -> dict:
    """Runs the model on the saved (already quantized) inputs; saves the raw output tensor. Numpy + LiteRT only."""
    import platform

    import numpy as np
    from ai_edge_litert import interpreter as litert

    # Imported as files, without the tfq_noise package (which loads TensorFlow): numpy and the stdlib only.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_worker import delegation
    from litert_run import invoke_batches

    kwargs = {"num_threads": 1}
    if kernels == "reference":
        kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = litert.Interpreter(model_path=model_path, **kwargs)
    outputs = invoke_batches(interpreter, np.load(inputs_path), batch)
    delegated = delegation(interpreter._get_ops_details())  # pylint: disable=protected-access
    np.save(outputs_path, outputs)
    features = None
    if platform.machine() == "aarch64" and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            features = next((line.split(":", 1)[1].split() for line in f if line.startswith("Features")), None)
    return {"machine": platform.machine(), "cpu_features": features, "kernels": kernels,
            "delegate_applied": delegated["applied"], "delegated_ops": delegated["delegated_ops"],
            "operators": delegated["total_ops"]}


# ----------------------------------------------------------------------------- host side


def qemu_version(qemu: str = QEMU) -> tuple[int, ...]:
    """``qemu-aarch64-static --version`` as a tuple; Arm64Error if it is missing or unreadable."""
    path = shutil.which(qemu)
    if path is None:
        raise Arm64Error(f"{qemu} is not on PATH (Debian: apt-get install qemu-user-static, >= 8.1)")
    text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    return parse_qemu_version(text)


def parse_qemu_version(text: str) -> tuple[int, ...]:
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise Arm64Error(f"cannot read a qemu version from {text[:200]!r}")
    return tuple(int(g) for g in match.groups() if g is not None)


def check_qemu(version: tuple[int, ...]) -> None:
    if version[:2] < QEMU_MIN_VERSION:
        raise Arm64Error(
            f"qemu {'.'.join(map(str, version))} is too old: before {'.'.join(map(str, QEMU_MIN_VERSION))} it shows "
            "arm64 programs the host's /proc/cpuinfo and LiteRT crashes reading it (Debian bookworm: "
            "apt-get install -t bookworm-backports qemu-user-static)")


def _installed_version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


def setup_commands(root: Path, litert_version: str, numpy_version: str, mirror: str = DEBIAN_MIRROR) -> list[list[str]]:
    """The commands ``setup`` runs (before unpacking the packages and fixing the merged /usr links)."""
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    return [
        ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={','.join(SYSROOT_PACKAGES)}",
         DEBIAN_SUITE, str(root / "sysroot"), mirror],
        [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(root / "site"), *platforms,
         "--python-version", ARM_PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:",
         f"ai-edge-litert=={litert_version}", f"numpy=={numpy_version}"],
    ]


def merge_usr(sysroot: Path) -> None:
    """Makes /bin, /sbin and /lib links into /usr, as a merged-/usr Debian has them (the loader is /lib/ld-linux…)."""
    for name in ("bin", "sbin", "lib"):
        top, usr = sysroot / name, sysroot / "usr" / name
        usr.mkdir(parents=True, exist_ok=True)
        if top.is_symlink():
            continue
        if not top.exists():
            top.symlink_to(Path("usr") / name)
            continue
        _move_into(top, usr)
        shutil.rmtree(top)
        top.symlink_to(Path("usr") / name)


def _move_into(source: Path, target: Path) -> None:
    """Moves what ``source`` holds into ``target``; where both have a file, ``target``'s (the /usr one) stays."""
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and destination.is_dir() and not destination.is_symlink():
            _move_into(entry, destination)
        elif not (destination.exists() or destination.is_symlink()):
            entry.rename(destination)


def setup(root: Path, print_fn: Callable[..., None] = print, mirror: str = DEBIAN_MIRROR) -> None:
    """Builds ``root/sysroot`` and ``root/site`` (see the module doc); idempotent."""
    check_qemu(qemu_version())
    for tool in ("debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise Arm64Error(f"{tool} is not on PATH (Debian: apt-get install debootstrap)")
    root.mkdir(parents=True, exist_ok=True)
    debootstrap, pip = setup_commands(root, _installed_version("ai-edge-litert"), _installed_version("numpy"), mirror)
    sysroot = root / "sysroot"
    if not (sysroot / ARM_PYTHON).exists():
        print_fn("$ " + " ".join(debootstrap))
        subprocess.run(debootstrap, check=True)
        archives = sorted((sysroot / "var" / "cache" / "apt" / "archives").glob("*.deb"))
        print_fn(f"unpacking {len(archives)} downloaded packages into {sysroot}")
        for deb in archives:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(sysroot)], check=True)
    merge_usr(sysroot)
    print_fn("$ " + " ".join(pip))
    subprocess.run(pip, check=True)
    info = arm_probe(root)
    print_fn(f"arm64 LiteRT ready under {root}: {info}")


def arm_command(root: Path, argv: Sequence[str], qemu: str = QEMU, cpu: str | None = None) -> tuple[list[str], dict]:
    """The command (and environment) that runs ``python3 <argv>`` as arm64 under qemu (``-cpu cpu`` if given)."""
    sysroot = root / "sysroot"
    python = sysroot / ARM_PYTHON
    if not python.exists() or not (root / "site").is_dir():
        raise Arm64Error(f"no arm64 environment under {root}: run python -m tfq_noise.deploy.arm64 setup --root={root}")
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONHOME", None)
    return [qemu, *(["-cpu", cpu] if cpu else []), "-L", str(sysroot), str(python), *argv], env


def arm_probe(root: Path) -> str:
    command, env = arm_command(root, ["-c", "import platform, numpy, ai_edge_litert.interpreter as i; "
                                            "print(platform.machine(), 'numpy', numpy.__version__)"])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise Arm64Error(f"the arm64 Python does not start: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc.stdout.strip()


def _worker_argv(model: Path, inputs: Path, outputs: Path, kernels: str, batch: int) -> list[str]:
    spec = json.dumps({"model_path": str(model), "inputs_path": str(inputs), "outputs_path": str(outputs),
                       "kernels": kernels, "batch": batch})
    return ["-P", str(Path(__file__).resolve()), "--_worker", spec]


def run_side(prefix: Sequence[str], env: dict | None, model: Path, inputs: Path, outputs: Path, kernels: str,
             batch: int = BATCH, timeout: float = 7200) -> dict:
    """Runs the worker with ``prefix`` (a Python command) and returns its info; Arm64Error on failure."""
    try:
        proc = subprocess.run([*prefix, *_worker_argv(model, inputs, outputs, kernels, batch)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Arm64Error(f"{model} did not finish within {timeout:.0f} s ({' '.join(prefix[:1])}); "
                         "use --eval_images to check fewer images") from None
    if proc.returncode != 0:
        raise Arm64Error(f"{model} did not run ({' '.join(prefix[:1])}, exit {proc.returncode}):\n"
                         f"{(proc.stdout + proc.stderr)[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_outputs(native, arm, labels, output_scale: float | None) -> dict:
    """Agreement of two raw output arrays [N, classes] (int8 or float), and each side's accuracy."""
    import numpy as np

    native, arm, labels = np.asarray(native), np.asarray(arm), np.asarray(labels)
    if native.shape != arm.shape:
        raise Arm64Error(f"output shapes differ: {native.shape} vs {arm.shape}")
    diff = np.abs(native.astype(np.float64) - arm.astype(np.float64))
    top_native, top_arm = native.argmax(1), arm.argmax(1)
    report = {
        "images": int(len(native)),
        "top1_agreement": float(np.mean(top_native == top_arm)),
        "top1_disagreements": int(np.sum(top_native != top_arm)),
        "bit_identical_outputs": float(np.mean(np.all(native == arm, axis=1))),
        "max_abs_output_difference": float(diff.max()) if diff.size else 0.0,
        "mean_abs_output_difference": float(diff.mean()) if diff.size else 0.0,
        "accuracy_x86_64": float(np.mean(top_native == labels)),
        "accuracy_arm64": float(np.mean(top_arm == labels)),
    }
    report["accuracy_difference_points"] = 100.0 * (report["accuracy_arm64"] - report["accuracy_x86_64"])
    if np.issubdtype(native.dtype, np.integer):
        report["output_difference_unit"] = "output quantization steps"
        report["output_scale"] = output_scale
    else:
        report["output_difference_unit"] = "logits"
    return report


def _normalization(model: Path) -> dict:
    sidecar = model.with_name(model.name + ".json")
    if not sidecar.exists():
        raise Arm64Error(f"{sidecar} is missing: the check reads the image normalization from the report that "
                         "python -m tfq_noise.deploy.export writes beside each model")
    normalization = json.loads(sidecar.read_text()).get("source", {}).get("normalization")
    if not normalization:
        raise Arm64Error(f"{sidecar} has no source.normalization")
    return normalization


def load_images(images: str | None, cifar10_dir: str | None, eval_images: int):
    import numpy as np

    if images:
        with np.load(images, allow_pickle=False) as data:
            if "images" not in data or "labels" not in data:
                raise Arm64Error(f"{images} must hold arrays 'images' (uint8 [N, H, W, C]) and 'labels' [N]")
            pixels, labels = data["images"], data["labels"]
    else:
        from tfq_noise.data import cifar10

        test = cifar10.load(cifar10_dir).test
        pixels, labels = test.images, test.labels
    if pixels.ndim != 4 or len(pixels) != len(labels):
        raise Arm64Error(f"images must be [N, H, W, C] with one label each, got {pixels.shape} and {labels.shape}")
    if eval_images:
        pixels, labels = pixels[:eval_images], labels[:eval_images]
    return pixels, np.asarray(labels, np.int64).reshape(-1)


def check(models: Sequence[str | Path], root: Path, *, pixels, labels, kernels: str = "default",
          min_agreement: float = DEFAULT_MIN_AGREEMENT, cpu: str | None = None,
          arm_prefix: tuple[list[str], dict] | None = None, print_fn: Callable[..., None] = print) -> dict:
    """Runs each model natively and as arm64; returns the report (``passed`` per model and overall).

    ``arm_prefix``: (command, environment) replacing the qemu one (tests run
    the host Python there: both sides then run the same code).
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from tfq_noise.deploy.verify import normalize_images, quantize_input

    if kernels not in KERNELS:
        raise Arm64Error(f"unknown kernels {kernels!r}; choose one of {list(KERNELS)}")
    if arm_prefix is None:
        version = qemu_version()
        check_qemu(version)
        arm_prefix = arm_command(root, [], cpu=cpu)
        emulator = {"qemu": ".".join(map(str, version)), "cpu": cpu or "qemu's default (max: every feature)",
                    "sysroot": str(root / "sysroot")}
    else:
        emulator = {"qemu": None, "arm_command": " ".join(arm_prefix[0])}
    entries = []
    with tempfile.TemporaryDirectory(prefix="tfq_arm64_") as tmp:
        tmp = Path(tmp)
        for model in map(Path, models):
            interpreter = Interpreter(model_path=str(model))
            input_detail = interpreter.get_input_details()[0]
            output_detail = interpreter.get_output_details()[0]
            inputs = quantize_input(normalize_images(pixels, _normalization(model)), input_detail)
            np.save(tmp / "inputs.npy", inputs)
            print_fn(f"{model.name}: {len(inputs)} images, x86-64 ...", flush=True)
            native = run_side([sys.executable], None, model.resolve(), tmp / "inputs.npy", tmp / "native.npy", kernels)
            print_fn(f"{model.name}: arm64 ({'emulated' if emulator['qemu'] else 'substitute'}) ...", flush=True)
            arm = run_side(arm_prefix[0], arm_prefix[1], model.resolve(), tmp / "inputs.npy", tmp / "arm.npy", kernels)
            scale = output_detail["quantization"][0] or None
            entry = {"model": str(model), "size_bytes": model.stat().st_size, "x86_64": native, "arm64": arm,
                     **compare_outputs(np.load(tmp / "native.npy"), np.load(tmp / "arm.npy"), labels, scale)}
            entry["passed"] = entry["top1_agreement"] >= min_agreement
            entries.append(entry)
            print_fn(f"{model.name}: top-1 agreement {entry['top1_agreement']:.4f} "
                     f"({entry['top1_disagreements']} images differ), bit-identical outputs "
                     f"{entry['bit_identical_outputs']:.4f}, accuracy x86-64 {100 * entry['accuracy_x86_64']:.2f}% / "
                     f"arm64 {100 * entry['accuracy_arm64']:.2f}%: {'ok' if entry['passed'] else 'FAILED'}",
                     flush=True)
    from importlib import metadata

    return {"date": datetime.date.today().isoformat(), "kernels": kernels, "min_agreement": min_agreement,
            "images": int(len(labels)), "emulator": emulator, "ai_edge_litert": metadata.version("ai-edge-litert"),
            "latency": "not measured: emulated timings say nothing about an arm64 CPU",
            "passed": all(e["passed"] for e in entries), "models": entries}


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfq_noise.deploy.arm64", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="build the arm64 Debian root and LiteRT wheels under --root")
    s.add_argument("--root", default=str(DEFAULT_ROOT))
    s.add_argument("--mirror", default=DEBIAN_MIRROR)
    c = sub.add_parser("check", help="run models on x86-64 and arm64 and compare their outputs")
    c.add_argument("models", nargs="+", help=".tflite files written by python -m tfq_noise.deploy.export")
    c.add_argument("--root", default=str(DEFAULT_ROOT))
    c.add_argument("--kernels", default="default",
                   help="default: LiteRT's default delegates (XNNPACK) on both sides; reference: builtin kernels")
    c.add_argument("--eval_images", type=int, default=0, help="first N test images (0: all)")
    c.add_argument("--images", default=None, help="an .npz with uint8 'images' and 'labels' instead of CIFAR-10")
    c.add_argument("--cifar10_dir", default=None, help="CIFAR-10 binaries (default $TFQ_NOISE_CIFAR10_DIR)")
    c.add_argument("--min_agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                   help="the top-1 agreement each model needs to pass")
    c.add_argument("--cpu", default=None,
                   help="the emulated CPU (qemu -cpu), e.g. cortex-a53 (ARMv8.0, no dot product), cortex-a76; "
                        "LiteRT picks its kernels by the CPU's features. Default: qemu's max")
    c.add_argument("--output", default=None, help="write the JSON report here (default: print only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from tfq_noise.deploy.flatbuffer import check_model_file

    args = _parser().parse_args(argv)
    root = Path(args.root).expanduser()
    try:
        if args.command == "setup":
            setup(root, mirror=args.mirror)
            return 0
        if not 0.0 <= args.min_agreement <= 1.0:
            raise ValueError(f"--min_agreement must be in [0, 1], got {args.min_agreement}")
        for model in args.models:
            check_model_file(model)
            _normalization(Path(model))
        pixels, labels = load_images(args.images, args.cifar10_dir, args.eval_images)
        report = check(args.models, root, pixels=pixels, labels=labels, kernels=args.kernels,
                       min_agreement=args.min_agreement, cpu=args.cpu)
    except (Arm64Error, ValueError, FileNotFoundError, subprocess.CalledProcessError) as error:
        print(f"arm64 {args.command} failed: {error}", file=sys.stderr)
        return 1
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".tmp-{output.name}")
        partial.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        os.replace(partial, output)
        print(f"wrote {output}")
    print("passed" if report["passed"] else f"FAILED: top-1 agreement below {args.min_agreement} for "
          f"{[Path(e['model']).name for e in report['models'] if not e['passed']]}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_worker":
        print(json.dumps(run_batches(**json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())

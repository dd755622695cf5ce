"""Deployment: TFLite (LiteRT) export of finished runs, its verification, benchmarks and predictions.

Modules (imported on demand; this package imports nothing heavy):

* ``flatbuffer``: reads, rewrites and summarizes .tflite files (no TensorFlow);
  defines :class:`~tfq_noise.deploy.flatbuffer.ExportError`.
* ``checks``: the input checks the commands share (model files, output paths,
  flags) and :class:`~tfq_noise.deploy.checks.InputError` (exit 2).
* ``convert``: TFLite converter calls (float32, PTQ int8, QAT int8, litert-quantizer),
  the W<b>/A8 rebuild of low-bit-activation runs and its activation range re-estimation.
* ``verify``: runs LiteRT and Keras on images and compares them (the accuracy
  tolerance, the agreement rule).
* ``litert_run``: a LiteRT interpreter over an array in batches, and a model
  probe (numpy only; runs as a script in a subprocess).
* ``writer``: converts, verifies and writes one model with its JSON report.
* ``export``: exports a run, verified (``python -m tfq_noise.deploy.export``).
* ``benchmark``: CPU latency / throughput / memory benchmark of .tflite files
  (``python -m tfq_noise.deploy.benchmark``); ``bench_worker`` times one model
  in a fresh process; ``cross_check`` runs ``litert-benchmark`` beside it.
* ``predict``: classifies image files with an exported model
  (``python -m tfq_noise.deploy.predict``).
* ``android``: the same models on an Android device through ``adb`` and
  LiteRT's ``benchmark_model`` (``python -m tfq_noise.deploy.android``).
* ``arm64``: the same models under an arm64 LiteRT (qemu user-mode emulation),
  their outputs compared with x86-64 on the test set (``python -m tfq_noise.deploy.arm64``).

Imports go one way: ``flatbuffer`` <- ``checks``, ``convert``, ``verify`` <- ``writer`` <- ``export``.
"""

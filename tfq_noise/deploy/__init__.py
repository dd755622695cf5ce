"""Deployment: TFLite (LiteRT) export of finished runs, its verification, and benchmarks.

Modules (imported on demand; this package imports nothing heavy):

* ``flatbuffer``: reads, rewrites and summarizes .tflite files (no TensorFlow);
  defines :class:`~tfq_noise.deploy.flatbuffer.ExportError`.
* ``convert``: TFLite converter calls (float32, PTQ int8, QAT int8), the W<b>/A8
  rebuild of low-bit-activation runs and its activation range re-estimation.
* ``verify``: runs LiteRT and Keras on images and compares them.
* ``litert_run``: a LiteRT interpreter over an array in batches (numpy only).
* ``export``: exports a run, verified (``python -m tfq_noise.deploy.export``).
* ``benchmark``: CPU latency / throughput / memory benchmark of .tflite files
  (``python -m tfq_noise.deploy.benchmark``), optionally cross-checked with
  ``litert-benchmark``.
* ``android``: the same models on an Android device through ``adb`` and
  LiteRT's ``benchmark_model`` (``python -m tfq_noise.deploy.android``).
* ``arm64``: the same models under an arm64 LiteRT (qemu user-mode emulation),
  their outputs compared with x86-64 on the test set (``python -m tfq_noise.deploy.arm64``).

Imports go one way: ``flatbuffer`` <- ``convert``, ``verify`` <- ``export``.
"""

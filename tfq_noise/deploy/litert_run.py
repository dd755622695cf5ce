"""Runs a LiteRT interpreter over an array in fixed-size batches. Imports numpy only.

Kept apart so that :mod:`tfq_noise.deploy.arm64`'s worker can import it by
file, without the ``tfq_noise`` package (which loads TensorFlow), under an
arm64 Python that has only numpy and ai-edge-litert.
"""

from __future__ import annotations

import numpy as np


def invoke_batches(interpreter, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's raw output tensor for ``inputs`` (already of the input tensor's dtype), in fixed-size batches
    (the last one zero-padded); the interpreter's input is resized to ``batch_size`` and allocated here."""
    input_index = interpreter.get_input_details()[0]["index"]
    batch_size = max(1, min(batch_size, len(inputs)))
    interpreter.resize_tensor_input(input_index, [batch_size, *inputs.shape[1:]])
    interpreter.allocate_tensors()
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start: start + batch_size]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[:n].copy())
    return np.concatenate(outputs)

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


def describe(model_path: str) -> dict:
    """Loads a .tflite, allocates it and runs it once on zeros; its input and output tensors (JSON-ready).

    Raises whatever LiteRT raises for a file it cannot use. Run it in a subprocess (``python -P litert_run.py
    --probe MODEL``) when the file is untrusted: a damaged model can abort LiteRT's C++ code, not only raise.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"the model has {len(inputs)} inputs and {len(outputs)} outputs; one of each is expected")
    detail = inputs[0]
    interpreter.resize_tensor_input(detail["index"], [1, *[int(d) for d in detail["shape"][1:]]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], np.zeros([1, *detail["shape"][1:]], detail["dtype"]))
    interpreter.invoke()

    def tensor(d) -> dict:
        scale, zero_point = d["quantization"]
        return {"shape": [int(x) for x in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale), "zero_point": int(zero_point)}

    return {"input": tensor(detail), "output": tensor(outputs[0])}


if __name__ == "__main__":  # python -P litert_run.py --probe MODEL: prints describe(MODEL) as JSON, exit 0
    import json
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "--probe":
        sys.exit("usage: python -P litert_run.py --probe MODEL")
    try:
        print(json.dumps(describe(sys.argv[2])))
    except Exception as error:  # noqa: BLE001  (reported by the parent, in one line)
        print(f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}",
              file=sys.stderr)
        sys.exit(3)

"""Quantization-aware training as a regularizer (paper §2.2): W4/A4, first and last layers W8/A8."""

from __future__ import annotations

from tfq_noise.methods.base import Method
from tfq_noise.quantization import SCHEMES, check_bits, quantize_model


class Quantization(Method):
    name = "quantization"
    defaults = {
        "weight_bits": 4,
        "activation_bits": 4,
        "first_last_bits": 8,
        "quantization_scheme": "paper",
        "ema_momentum": 0.99,
        # Per-layer (weight_bits, activation_bits) by layer name, e.g. per-task heads.
        "layer_bits": {},
    }
    description = "quantization-aware training (straight-through estimator)"

    def check(self, hp):
        check_bits(hp["weight_bits"], "weight_bits")
        check_bits(hp["activation_bits"], "activation_bits")
        if hp["first_last_bits"] is not None:
            check_bits(hp["first_last_bits"], "first_last_bits")
        if hp["quantization_scheme"] not in SCHEMES:
            raise ValueError(f"quantization_scheme must be one of {sorted(SCHEMES)}, got {hp['quantization_scheme']!r}")
        if not 0.0 <= hp["ema_momentum"] < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {hp['ema_momentum']!r}")

    def transform_model(self, model, hp, context):
        return quantize_model(
            model, int(hp["weight_bits"]), int(hp["activation_bits"]),
            None if hp["first_last_bits"] is None else int(hp["first_last_bits"]),
            scheme=hp["quantization_scheme"], ema_momentum=float(hp["ema_momentum"]),
            layer_bits={k: tuple(v) for k, v in dict(hp["layer_bits"]).items()},
        )

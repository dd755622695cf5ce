"""Quantization-aware training as a regularizer (paper §2.2): W4/A4, first and last layers W8/A8."""

from __future__ import annotations

from tfq_noise.methods.base import Method, _check_range
from tfq_noise.quantization import SCHEMES, check_bits, quantize_model


class Quantization(Method):
    name = "quantization"
    defaults = {
        "weight_bits": 4,
        "activation_bits": 4,
        "first_last_bits": 8,
        "quantization_scheme": "paper",
        "ema_momentum": 0.99,
        # Per-layer (weight_bits, activation_bits) by layer name.
        "layer_bits": {},
        # Per-task (weight_bits, activation_bits) of multi-task heads, by task name.
        "head_bits": {},
    }
    description = "quantization-aware training (straight-through estimator)"

    def check(self, hp):
        check_bits(hp["weight_bits"], "weight_bits")
        check_bits(hp["activation_bits"], "activation_bits")
        if hp["first_last_bits"] is not None:
            check_bits(hp["first_last_bits"], "first_last_bits")
        if hp["quantization_scheme"] not in SCHEMES:
            raise ValueError(f"quantization_scheme must be one of {sorted(SCHEMES)}, got {hp['quantization_scheme']!r}")
        for key in ("layer_bits", "head_bits"):
            if not isinstance(hp[key], dict):
                raise ValueError(f"{key} must map names to [weight_bits, activation_bits], got {hp[key]!r}")
            for name, bits in hp[key].items():
                if not isinstance(bits, (list, tuple)) or len(bits) != 2:
                    raise ValueError(f"{key}[{name!r}] must be [weight_bits, activation_bits], got {bits!r}")
                check_bits(bits[0], f"{key}[{name!r}] weight bits")
                check_bits(bits[1], f"{key}[{name!r}] activation bits")
        _check_range(hp, "ema_momentum", 0.0, 1.0, high_open=True)

    def transform_model(self, model, hp, context):
        from tfq_noise.models.multitask import head_layer_bits

        layer_bits = head_layer_bits(dict(hp["head_bits"]))
        layer_bits.update({k: tuple(v) for k, v in dict(hp["layer_bits"]).items()})
        return quantize_model(
            model, int(hp["weight_bits"]), int(hp["activation_bits"]),
            None if hp["first_last_bits"] is None else int(hp["first_last_bits"]),
            scheme=hp["quantization_scheme"], ema_momentum=float(hp["ema_momentum"]),
            layer_bits=layer_bits,
        )

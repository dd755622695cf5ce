"""What every model builder shares: regularization arguments."""

from __future__ import annotations

from tfq_noise import keras

DROPOUT_POSITIONS = ("head", "stages", "blocks")


def kernel_regularizer(l2: float):
    """An L2 penalty on a kernel (coupled weight decay), or None."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def check_regularization(dropout_rate: float, dropout_position: str, l2: float) -> None:
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    if dropout_position not in DROPOUT_POSITIONS:
        raise ValueError(f"dropout_position must be one of {DROPOUT_POSITIONS}, got {dropout_position!r}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")

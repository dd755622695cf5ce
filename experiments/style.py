"""One colour per method, the same in every figure of every page.

:func:`method_color` takes a variant label of :func:`experiments.tables.variant_label` (``"baseline"``,
``"quantization W4/A4"``, ``"dropout (dropout_rate=0.3)"``, ``"sce+quantization W4/A4"``...). A method
combined with W4/A4 keeps its own colour (figures mark the combination with a square); W4/A4 alone is red, other
bit-widths of quantization lighter reds; settings of one method share its colour.
"""

from __future__ import annotations

METHOD_COLORS = {
    "baseline": "black",
    "early_stopping": "tab:orange",
    "weight_decay": "tab:brown",
    "dropout": "tab:purple",
    "label_smoothing": "tab:olive",
    "pruning": "tab:green",
    "gce": "tab:cyan",
    "sce": "tab:blue",
    "bootstrap": "tab:gray",
    "mixup": "goldenrod",
    "cleanlab": "teal",
}
W4A4_COLOR, OTHER_BITS_COLOR = "tab:red", "lightcoral"


def method_color(label: str) -> str:
    base = label.split(" (", 1)[0].split(" [", 1)[0]
    if base == "quantization W4/A4":
        return W4A4_COLOR
    if base.startswith("quantization W"):
        return OTHER_BITS_COLOR
    first = base.split("+", 1)[0].split(" ", 1)[0]
    return METHOD_COLORS.get(first, "tab:pink")

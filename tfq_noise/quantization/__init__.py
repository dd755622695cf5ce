"""The paper's quantizer (§2.2) as tfmot quantizers, configs and a scheme.

* :mod:`.ops` — fake quantization with a straight-through estimator;
* :mod:`.quantizers` — tfmot ``Quantizer``s for weights and activations;
* :mod:`.configs` — the ``QuantizeConfig`` that attaches them to a layer;
* :mod:`.scheme` — which layer gets which bits, and ``quantize_model``.
"""

from tfq_noise.quantization.ops import (
    check_bits,
    fake_quant,
    fake_quant_per_channel,
    fake_quant_per_tensor,
    grid_max,
)
from tfq_noise.quantization.quantizers import ActivationQuantizer, WeightQuantizer
from tfq_noise.quantization.configs import LayerQuantizeConfig
from tfq_noise.quantization.scheme import (
    SCHEMES,
    LayerPlan,
    QuantizationSpec,
    custom_objects,
    plan_model,
    quantize_model,
    quantize_scope,
)

__all__ = [
    "ActivationQuantizer", "LayerPlan", "LayerQuantizeConfig", "QuantizationSpec", "SCHEMES",
    "WeightQuantizer", "check_bits", "custom_objects", "fake_quant", "fake_quant_per_channel",
    "fake_quant_per_tensor", "grid_max", "plan_model", "quantize_model", "quantize_scope",
]

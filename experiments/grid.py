"""Expanding the runner's flags into a grid of run configs.

A method entry may carry its own hyper-parameters in brackets, so one grid
can hold several settings of a method (the paper's Fig. 3):
``quantization[weight_bits=2],quantization[weight_bits=8],dropout[dropout_rate=0.3;dropout_position=blocks]``.
Inside brackets, settings are separated by ``;``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from tfq_noise.config import RATELESS_NOISE_TYPES, RunConfig
from tfq_noise.methods import default_hparams

_ENTRY = re.compile(r"^\s*([A-Za-z_+]+)\s*(?:\[(.*)\])?\s*$")


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Splits on ``separator`` outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced brackets in {text!r}")
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise ValueError(f"unbalanced brackets in {text!r}")
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_value(text: str) -> Any:
    """'4' → 4, '0.1' → 0.1, 'true' → True, 'none' → None, JSON → object, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def parse_assignments(text: str, separator: str = ",") -> dict:
    """'a=1,b=x' → {'a': 1, 'b': 'x'}."""
    out = {}
    for item in split_top_level(text, separator):
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def parse_methods(text: str) -> list[tuple[str, dict]]:
    """'baseline,quantization[weight_bits=2]' → [('baseline', {}), ('quantization', {'weight_bits': 2})]."""
    entries = []
    for item in split_top_level(text):
        match = _ENTRY.match(item)
        if not match:
            raise ValueError(f"cannot read method entry {item!r}; expected name or name[key=value;...]")
        entries.append((match.group(1), parse_assignments(match.group(2), ";") if match.group(2) else {}))
    if not entries:
        raise ValueError("--methods is empty")
    return entries


def expand(
    base: Mapping[str, Any],
    methods: Iterable[tuple[str, dict]],
    noise_types: Iterable[str],
    noise_rates: Iterable[float],
    seeds: Iterable[int],
    shared_hparams: Mapping[str, Any] | None = None,
) -> list[RunConfig]:
    """Every (seed, noise, rate, method) combination, seeds outermost so a partial grid is a whole seed.

    Human-noise types (CIFAR-10N, FER+ annotators) have no rate: they get one run per method and seed.
    Raises ValueError on the first invalid combination, before anything runs.
    """
    configs, seen = [], {}
    methods, noise_types, noise_rates = list(methods), list(noise_types), list(noise_rates)
    for method, hparams in methods:
        unknown = set(hparams) - set(default_hparams(method))
        if unknown:
            raise ValueError(f"{method} has no hyper-parameter(s) {sorted(unknown)}; "
                             f"it has {sorted(default_hparams(method))}")
    for seed in seeds:
        for noise_type in noise_types:
            rates = [0.0] if noise_type in RATELESS_NOISE_TYPES else noise_rates
            for rate in rates:
                for method, hparams in methods:
                    config = RunConfig(**base, method=method, hparams={**(shared_hparams or {}), **hparams},
                                       noise_type=noise_type, noise_rate=float(rate), seed=int(seed))
                    if config.run_name in seen:
                        if seen[config.run_name] != config.to_dict():
                            raise ValueError(f"two different runs would share the name {config.run_name}")
                        continue  # the same run listed twice (e.g. a method's default spelled out)
                    seen[config.run_name] = config.to_dict()
                    configs.append(config)
    return configs


def shard(configs: list[RunConfig], shard_index: int, num_shards: int) -> list[RunConfig]:
    """The runs of one shard of a job array: every ``num_shards``-th, starting at ``shard_index``."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index} and {num_shards}")
    return configs[shard_index::num_shards]

"""One run's configuration: everything that decides its result, and its name."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping

from tfq_noise import methods
from tfq_noise.data import cifar10n
from tfq_noise.data.pipeline import augmentation_mode

VALIDATION_LABELS = ("noisy", "clean")
# Noise that comes with the data (human annotators), so it has no rate.
RATELESS_NOISE_TYPES = tuple(cifar10n.NOISE_TYPES) + ("annotators", "original")
STRATEGIES = ("default", "mirrored", "one_device")
# mixed_bfloat16 computes in bfloat16 (fast on CPUs with AVX512-BF16), keeps float32 weights.
PRECISIONS = ("float32", "mixed_bfloat16")
# constant: the learning rate throughout; cosine: decayed per step from it to 0 at the last step.
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A training run. Paths to data are not part of it (they do not change the result)."""

    experiment: str = "default"
    dataset: str = "cifar10"
    model: str = "resnet20"
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    method: str = "baseline"
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the method defaults
    noise_type: str = "symmetric"
    noise_rate: float = 0.0
    seed: int = 0
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    train_size: int = 0  # 0: every training example
    validation_fraction: float = 0.1
    validation_labels: str = "noisy"
    augment: str = "none"  # none, flip or crop_flip (pipeline.AUGMENTATIONS); True/False of older configs accepted
    eval_train_size: int = 10_000  # training examples scored each epoch for memorization
    test_size: int = 0  # 0: the whole test set; else a fixed subset of it (tfq_noise.data.TEST_SUBSET_SEED)
    dataset_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    jit_compile: bool = False
    deterministic: bool = False
    strategy: str = "default"
    precision: str = "float32"

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.experiment):
            raise ValueError(f"experiment name {self.experiment!r} may only hold letters, digits, '_', '.', '-'")
        object.__setattr__(self, "augment", augmentation_mode(self.augment))  # bools of older configs too
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        methods.resolve(self.method, self.hparams)  # raises on a bad method or hyper-parameter
        check_model_arguments(self.model, self.model_kwargs)
        check_dataset_arguments(self.dataset, self.dataset_kwargs)
        from tfq_noise.models.applications import method_kwargs_problem

        problem = method_kwargs_problem(self.model, self.recipe.model_kwargs())
        if problem:
            raise ValueError(problem)
        if not 0.0 <= self.noise_rate <= 1.0:
            raise ValueError(f"noise_rate must be in [0, 1], got {self.noise_rate}")
        for key, low in (("epochs", 1), ("batch_size", 1), ("train_size", 0), ("eval_train_size", 0),
                           ("test_size", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.validation_labels not in VALIDATION_LABELS:
            raise ValueError(f"validation_labels must be one of {VALIDATION_LABELS}, got {self.validation_labels!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.validation_fraction == 0 and methods.resolve(self.method, self.hparams).selects_best_epoch():
            raise ValueError(f"{self.method} needs a validation split: validation_fraction must be > 0")

    @property
    def recipe(self) -> methods.Recipe:
        return methods.resolve(self.method, self.hparams)

    @property
    def resolved_hparams(self) -> dict:
        return dict(self.recipe.hparams)

    @property
    def run_name(self) -> str:
        """A readable, unique directory name: noise, method (+ non-default settings), seed."""
        defaults = methods.default_hparams(self.method)
        changed = {k: v for k, v in self.resolved_hparams.items() if defaults.get(k) != v}
        method = self.method.replace("+", "-")
        if changed:
            method += "_" + "_".join(f"{k}-{_short(v)}" for k, v in sorted(changed.items()))
        model = "" if not self.model_kwargs else "_" + "_".join(
            f"{k}-{_short(v)}" for k, v in sorted(self.model_kwargs.items()))
        # Human label noise (CIFAR-10N) has no rate to name.
        rate = f"{self.noise_rate:.2f}" if round(self.noise_rate, 2) == self.noise_rate else f"{self.noise_rate:g}"
        noise = self.noise_type if self.noise_type in RATELESS_NOISE_TYPES else f"{self.noise_type}-{rate}"
        data = "" if not self.dataset_kwargs else "_" + "_".join(
            f"{k}-{_short(v)}" for k, v in sorted(self.dataset_kwargs.items()))
        precision = "" if self.precision == "float32" else f"_{self.precision}"
        return f"{noise}{data}__{method}{model}{precision}__seed{self.seed}"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hparams"] = self.resolved_hparams
        return json.loads(json.dumps(out))  # plain JSON types

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        data = dict(data)
        data.setdefault("precision", "float32")  # runs written before the field existed
        data.setdefault("lr_schedule", "constant")
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown run config keys: {sorted(unknown)}")
        return cls(**data)


def check_model_arguments(model: str, model_kwargs: Mapping[str, Any]) -> None:
    """Raises ValueError for an unknown model or an argument its builder does not take."""
    import inspect

    from tfq_noise.models import MODELS

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    # num_classes and input_shape come from the data, the rest may come from the methods.
    signature = inspect.signature(MODELS[model])
    try:
        signature.bind_partial(**dict(model_kwargs))
    except TypeError as error:
        raise ValueError(f"model {model!r}: bad model_kwargs {dict(model_kwargs)}: {error}") from None
    for key, value in dict(model_kwargs).items():  # a value of another type than the default's is a typo
        default = signature.parameters[key].default if key in signature.parameters else inspect.Parameter.empty
        if default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            hint = " (true or false)" if isinstance(default, bool) else ""
            raise ValueError(f"model {model!r}: {key}={value!r} should be a {type(default).__name__}{hint} like "
                             f"its default {default!r}")
    from tfq_noise.models import argument_problem

    problem = argument_problem(model_kwargs)
    if problem:
        raise ValueError(f"model {model!r}: {problem}")


def check_dataset_arguments(dataset: str, dataset_kwargs: Mapping[str, Any]) -> None:
    """Raises ValueError for a dataset_kwargs key the dataset does not take, naming those it takes (an unknown
    dataset is left to the registry)."""
    from tfq_noise.data.registry import DATASET_OPTIONS, registry_key

    try:
        accepted = DATASET_OPTIONS[registry_key(dataset)]
    except (ValueError, KeyError):
        return
    unknown = sorted(set(dict(dataset_kwargs)) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
        raise ValueError(f"unknown dataset_kwargs {', '.join(unknown)}: not an option of {dataset} ({takes})")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return "-".join(f"{k}{_short(v)}" for k, v in sorted(value.items())) or "none"
    if isinstance(value, (list, tuple)):
        return "x".join(_short(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.]+", "", str(value))

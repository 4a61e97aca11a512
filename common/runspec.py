"""The run spec: what a user asks for, from a TOML file, as frozen typed config.

Defaults live in ``schemas/run-spec.schema.json`` only; :func:`load` validates
the file, fills the defaults and builds :class:`RunSpec`. ``"auto"`` values are
settled by :meth:`RunSpec.resolved` once it is known whether the run is local.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.gpus import batch_split_problem, gpu_count
from common.placement import MarketChoice
from common.status import FinetuneMode
from common.timeutil import parse_duration_minutes
from schemas import SchemaValidationError, schema_for, validate, with_defaults

PRETRAINED_DEFAULT = "amazon/chronos-2"
TINY = "tiny"
TINY_PRETRAINED = "tiny-pretrained"
AUTO = "auto"
# "auto" context length and learning rate of the small local bases: (context, lr full, lr LoRA).
# The random-init one learns from scratch (lr 1e-3); the shipped pretrained one is fine-tuned.
SMALL_BASE_DEFAULTS: dict[str, tuple[int, float, float]] = {
    TINY: (128, 1e-3, 1e-3),
    TINY_PRETRAINED: (128, 1e-3, 3e-3),  # measured best of 3e-4, 1e-3, 3e-3 at 300-1000 steps
}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEBUG_KEEP_ON_FAILURE_MINUTES = 30


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """The run spec's ``instance`` section.

    Attributes:
        market: a purchase market or an order of them (``common.placement.STRATEGIES``).
        max_recoveries: automatic relaunches after interruptions (0: none).
        max_cost: USD the run may cost (projected) before it stops with reason ``budget``;
            ``None``: no limit.
    """

    types: tuple[str, ...]
    market: MarketChoice
    max_runtime_minutes: int
    availability_zones: tuple[str, ...]
    root_volume_gb: int
    max_recoveries: int
    max_cost: float | None
    debug: bool = False  # launch with the debug instance profile (Session Manager)
    keep_on_failure_minutes: int = 0  # a failed instance stays up this long before poweroff


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """The run spec's ``data`` section: where the data is and which columns mean what.

    The one description of the training data, read by the launch checks and by the
    trainer's loader alike. Build it from a validated document (:func:`from_dict`, or
    :meth:`DataSpec.from_dict` for the section alone) so the schema's defaults apply.

    Attributes:
        prefix: S3 prefix of the parquet files (``cached-datasets/.../``).
        item_id_column, timestamp_column, target_column: column names.
        past_covariates: numeric or string columns known only in the past.
        known_covariates: columns whose future values are known (calendar, promotions).
        frequency: pandas frequency alias (``"h"``, ``"D"``, ``"15min"``, ``"MS"``...);
            ``None`` (the run spec's ``"auto"``, its default) lets the loader infer it
            from the timestamps.
        max_nan_fraction: an item whose target is missing (NaN, or a gap filled with NaN
            on the frequency grid) for more than this share of its steps is dropped.
        min_items: the run fails only when fewer items remain after the drops.

    Raises:
        ValueError: a column named twice.
    """

    prefix: str
    item_id_column: str
    timestamp_column: str
    target_column: str
    past_covariates: tuple[str, ...]
    known_covariates: tuple[str, ...]
    frequency: str | None
    max_nan_fraction: float
    min_items: int

    def __post_init__(self) -> None:
        if self.frequency == AUTO:
            object.__setattr__(self, "frequency", None)
        object.__setattr__(self, "past_covariates", tuple(self.past_covariates))
        object.__setattr__(self, "known_covariates", tuple(self.known_covariates))
        names = list(self.columns)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"DataSpec names a column twice: {', '.join(duplicates)}")

    @property
    def covariates(self) -> tuple[str, ...]:
        """Past-only then known-future covariate columns."""
        return self.past_covariates + self.known_covariates

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the data must have."""
        return (self.item_id_column, self.timestamp_column, self.target_column, *self.covariates)

    def to_dict(self) -> dict[str, Any]:
        """The section as a run-spec document (inverse of :meth:`from_dict`)."""
        doc = _plain(dataclasses.asdict(self))
        doc["frequency"] = doc["frequency"] or AUTO
        return doc

    @classmethod
    def from_dict(cls, section: dict[str, Any], *, source: str = "run spec") -> DataSpec:
        """Validate a ``data`` section against the schema and fill its defaults.

        Raises:
            ConfigError: naming the JSON path of the first problem.
        """
        return from_dict({"data": section}, source=source).data


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The run spec's ``model`` section (every field documented in the schema).

    Attributes:
        backtest_windows: K test windows of ``prediction_length`` at the end of every series.
        eval_interval: validation every N steps (capped at ``num_steps``).
        early_stopping_patience: validations without improvement before stopping; ``None``: off.
        keep_base_if_worse: export the base when fine-tuning does not beat it on validation.
        mase_season: MASE's seasonal period; ``"auto"``: GluonTS's for the frequency.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        log_interval: report the loss every N steps; ``"auto"``: 10 on CUDA, 1 on CPU.
    """

    base: str
    finetune_mode: FinetuneMode
    prediction_length: int
    context_length: int | str
    num_steps: int
    batch_size: int
    learning_rate: float | str
    checkpoint_interval: int
    seed: int
    backtest_windows: int
    eval_interval: int
    early_stopping_patience: int | None
    keep_base_if_worse: bool
    mase_season: int | str
    precision: str
    log_interval: int | str


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    env: str
    instance: InstanceSpec
    data: DataSpec
    model: ModelSpec

    def resolved(self, *, local: bool) -> RunSpec:
        """Settle every ``"auto"``: the base model, context length and learning rate."""
        m = self.model
        base = (TINY_PRETRAINED if local else PRETRAINED_DEFAULT) if m.base == AUTO else m.base
        lora = m.finetune_mode is FinetuneMode.LORA
        small = SMALL_BASE_DEFAULTS.get(base)
        ctx = m.context_length
        if ctx == AUTO:
            ctx = small[0] if small else 2048
        lr = m.learning_rate
        if lr == AUTO:
            lr = (small[2] if lora else small[1]) if small else (1e-4 if lora else 1e-5)
        model = dataclasses.replace(m, base=base, context_length=int(ctx), learning_rate=float(lr))
        return dataclasses.replace(self, model=model)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a run-spec document (tuples as lists, enums as strings)."""
        doc = dataclasses.asdict(self)
        doc["data"] = self.data.to_dict()
        inst = doc["instance"]
        inst["max_runtime"] = inst.pop("max_runtime_minutes")
        keep = inst.pop("keep_on_failure_minutes")
        if keep != default_keep_on_failure(self.instance.debug, self.instance.max_runtime_minutes):
            inst["keep_on_failure"] = keep  # the default follows debug and max_runtime
        return _plain(doc)


def default_keep_on_failure(debug: bool, max_runtime_minutes: int) -> int:
    """Minutes a failed instance stays up when the spec does not say: 30 with ``debug``
    (at most ``max_runtime - 1``), else 0."""
    return max(0, min(DEBUG_KEEP_ON_FAILURE_MINUTES, max_runtime_minutes - 1)) if debug else 0


def _max_runtime(raw: str | int, source: str) -> int:
    """``instance.max_runtime`` in minutes, held to the schema's integer minimum in either form
    (the schema's pattern alone lets ``"0m"`` through: a dead-man switch that fires at once)."""
    minutes = parse_duration_minutes(raw)
    least = _schema_minimum("instance", "max_runtime")
    if minutes < least:
        raise ConfigError(
            f"{source}: $.instance.max_runtime: {raw!r} is {minutes} min; it must be at least {least} min "
            "(e.g. '90m', '4h')"
        )
    return minutes


def _schema_minimum(section: str, name: str) -> int:
    """The ``minimum`` of the integer form of ``section.name`` in the run-spec schema."""
    field_ = schema_for("run-spec")["properties"][section]["properties"][name]
    forms = field_.get("oneOf", [field_])
    return int(next(f["minimum"] for f in forms if f.get("type") == "integer"))


def _keep_on_failure(inst: dict[str, Any], max_runtime: int, source: str) -> int:
    """``instance.keep_on_failure`` in minutes, checked to end before the max runtime."""
    raw = inst.get("keep_on_failure")
    if raw is None:
        return default_keep_on_failure(inst["debug"], max_runtime)
    keep = parse_duration_minutes(raw)
    if keep >= max_runtime:
        raise ConfigError(
            f"{source}: $.instance.keep_on_failure: {keep} min must be less than max_runtime "
            f"({max_runtime} min): the dead-man switch powers the instance off at max_runtime"
        )
    return keep


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, MarketChoice | FinetuneMode):
        return value.value
    return value


def from_dict(doc: dict[str, Any], *, source: str = "run spec") -> RunSpec:
    """Validate ``doc``, fill defaults, and build the spec.

    Raises:
        ConfigError: naming the JSON path of the first problem (also a
            ``keep_on_failure`` that would not end before ``max_runtime``).
    """
    try:
        validate("run-spec", doc, source=source)
    except SchemaValidationError as exc:
        raise ConfigError(f"{source}: {exc.path}: {exc.reason}") from None
    _check_beyond_schema(doc, source)
    full = with_defaults("run-spec", doc)
    inst, data, model = full["instance"], full["data"], full["model"]
    _check_batch_split(inst["types"], model["batch_size"], source)
    for interval in ("checkpoint_interval", "eval_interval"):
        model[interval] = min(model[interval], model["num_steps"])
    max_runtime = _max_runtime(inst["max_runtime"], source)
    return RunSpec(
        env=full["env"],
        instance=InstanceSpec(
            types=tuple(inst["types"]),
            market=MarketChoice(inst["market"]),
            max_runtime_minutes=max_runtime,
            availability_zones=tuple(inst["availability_zones"]),
            root_volume_gb=inst["root_volume_gb"],
            max_recoveries=inst["max_recoveries"],
            max_cost=None if inst["max_cost"] is None else float(inst["max_cost"]),
            debug=inst["debug"],
            keep_on_failure_minutes=_keep_on_failure(inst, max_runtime, source),
        ),
        data=_data_spec(data, source),
        model=ModelSpec(**{**model, "finetune_mode": FinetuneMode(model["finetune_mode"])}),
    )


SEED_MAX = 2**32 - 1  # numpy's legacy seed range (transformers.set_seed seeds numpy with it)


def _check_beyond_schema(doc: dict[str, Any], source: str) -> None:
    """What the schema lets through and the trainer cannot take: a non-finite number (TOML's
    ``inf``/``nan``), a seed outside numpy's 32 bits (the run would fail after the GPU is rented).

    Raises:
        ConfigError: naming the JSON path.
    """
    for path, value in _numbers(doc, "$"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {path}: {value} is not a finite number")
    properties = schema_for("run-spec")["properties"]
    for section, fields in doc.items():
        for name, value in fields.items() if isinstance(fields, dict) else ():
            if isinstance(value, float) and _integer_only(properties[section]["properties"][name]):
                # JSON Schema counts 5.0 (and TOML's 1e308) as an integer; the code takes ints
                raise ConfigError(f"{source}: $.{section}.{name}: {value!r} is not a whole number")
    seed = (doc.get("model") or {}).get("seed")
    if isinstance(seed, int) and seed > SEED_MAX:
        raise ConfigError(f"{source}: $.model.seed: {seed} is too large; use 0 to {SEED_MAX}")


def _check_batch_split(types: list[str], batch_size: int, source: str) -> None:
    """Each GPU of a multi-GPU type takes an equal share of every batch (``common.gpus``): a batch that
    does not split is refused here, before anything is rented, not trained on fewer GPUs.

    Raises:
        ConfigError: naming ``$.model.batch_size`` and the type it does not split over.
    """
    for instance_type in types:
        problem = batch_split_problem(int(batch_size), gpu_count(instance_type))
        if problem is not None:
            raise ConfigError(f"{source}: $.model.batch_size: {problem} (instance type {instance_type})")


def _integer_only(field_: dict[str, Any]) -> bool:
    """The field takes integers and no other number."""
    types: list[Any] = []
    for form in field_.get("oneOf", [field_]):
        kind = form.get("type")
        types += kind if isinstance(kind, list) else [kind]
    return "integer" in types and "number" not in types


def _numbers(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, float):
        yield path, value


def _data_spec(data: dict[str, Any], source: str) -> DataSpec:
    overlap = set(data["past_covariates"]) & set(data["known_covariates"])
    if overlap:
        raise ConfigError(f"{source}: $.data: {sorted(overlap)} listed as both past and known covariates")
    try:
        return DataSpec(**data)
    except ValueError as exc:
        raise ConfigError(f"{source}: $.data: {exc}") from None


def load(path: Path | None) -> RunSpec:
    """Read a TOML run spec (``None``: all defaults).

    Raises:
        ConfigError: unreadable file, TOML syntax error, or a schema violation with its path.
    """
    if path is None:
        return from_dict({})
    try:
        doc = tomllib.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"run spec {path} not found; pass an existing TOML file with --spec") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"run spec {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML"
        ) from None
    except OSError as exc:  # a folder, no permission ...
        raise ConfigError(
            f"run spec {path} cannot be read ({exc.strerror or exc}); pass a TOML file with --spec"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"run spec {path} is not valid TOML: {exc}") from None
    return from_dict(doc, source=str(path))

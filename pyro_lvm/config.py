"""The experiment schema: load TOML, apply ``--set section.key=value`` overrides, validate, save.

Validation happens before anything runs and every error is one line that names the key: an unknown key lists
the valid keys of its section, an unknown component name lists the registered names, a wrong type names the
expected type. The schema is pydantic (``extra="forbid"``); we only reformat its errors.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pyro_lvm.errors import PyroLVMError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    name: str = "digits"
    root: str | None = None  # folder holding (or receiving) the IDX files of mnist / fashion_mnist
    download: bool = False  # only ever True on purpose: runs must work offline
    binarize: Literal["none", "static", "dynamic"] = "static"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # for static binarization
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # datasets without an official test split
    max_train: int | None = Field(None, gt=0)  # keep only the first n training rows (quick runs)
    seed: int = 0  # the split seed, independent of the training seed


class ModelConfig(_Section):
    name: str = "vae"
    latent_dim: int = Field(8, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [128, 128])  # decoder widths
    condition: Literal["none", "label", "quadrants"] = "none"
    observed_quadrants: int = Field(1, ge=1, le=3)  # quadrant CVAE: how many of the 4 quadrants c shows


class PriorConfig(_Section):
    name: str = "standard_normal"
    num_components: int = Field(10, gt=0)  # mog / vamp
    per_class: bool = False  # mog with a label CVAE: one component per class, p(z|c=k) = component k
    hidden: list[int] = Field(default_factory=lambda: [128])  # conditional prior network


class LikelihoodConfig(_Section):
    name: str = "bernoulli"
    scale: float = Field(0.1, gt=0.0)  # gaussian: fixed (or initial, if learned) observation scale
    learn_scale: bool = False


class GuideConfig(_Section):
    name: str = "amortized"
    hidden: list[int] = Field(default_factory=lambda: [128, 128])  # encoder widths
    init_scale: float = Field(1.0, gt=0.0)  # per_datapoint: initial q scale
    refine_steps: int = Field(5, ge=0)  # semi_amortized: K gradient steps per batch
    refine_lr: float = Field(0.1, gt=0.0)
    refine_backprop: Literal["none", "first", "all"] = "first"


class ElboConfig(_Section):
    name: str = "trace"
    num_particles: int = Field(1, gt=0)
    vectorize_particles: bool = True
    alpha: float = 0.0  # renyi: alpha = 0 is the IWAE bound
    # trace / mean_field through Pyro's JIT: the plain ELBO's gradients bit for bit, 1.3x -> 1.07x the
    # hand-written step at batch 128 on 2 CPU cores. auto: compiled where possible, else plain (pyro_lvm.elbos);
    # on: also warn when falling back; off: always plain.
    jit: Literal["auto", "on", "off"] = "auto"


class OptimConfig(_Section):
    name: str = "adam"
    lr: float = Field(1e-3, gt=0.0)
    local_lr: float = Field(1e-2, gt=0.0)  # per-datapoint local parameters (row-wise Adam)
    clip_norm: float | None = Field(None, gt=0.0)
    # torch's fused Adam kernel for the dense parameters: one kernel instead of a loop over tensors (~16%
    # less per step at batch 128 on 2 CPU cores, benchmarks/README.md). Off by default: it rounds differently
    # (~1e-7 per step), so runs would not reproduce the figures recorded with the default loop to the digit.
    fused: bool = False


class TrainConfig(_Section):
    steps: int = Field(3000, gt=0)
    batch_size: int = Field(128, gt=0)
    seed: int = 0
    eval_every: int | None = Field(None, gt=0)  # steps between validation ELBOs; default one epoch
    checkpoint_every: int = Field(500, gt=0)
    kl_warmup_steps: int = Field(0, ge=0)  # beta rises linearly from 0 to 1 over these steps
    pyro_validation: bool = False  # Pyro's distribution validation: on in tests, about 9% slower when on
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    out_dir: str | None = None  # default runs/<config stem>
    progress: bool = True


class EvalConfig(_Section):
    num_samples: int = Field(5000, gt=0)  # K, importance samples per datapoint
    chunk_size: int = Field(1000, gt=0)  # particles per vectorised call: bounds memory
    batch_size: int = Field(16, gt=0)  # datapoints per vectorised call (memory ~ batch * chunk * P floats)
    num_points: int | None = Field(None, gt=0)  # evaluate on the first n test points only
    seed: int = 1


class BaselineConfig(_Section):
    """The deterministic NN baseline of quadrant completion (pyro_lvm.baseline): fitted before the CVAE, frozen."""

    hidden: list[int] = Field(default_factory=lambda: [500, 500])
    steps: int = Field(3000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0.0)
    feed_prior: bool = False  # the prior network sees [c, E[x | f(c)]], as in the Pyro CVAE tutorial


class CompareConfig(_Section):
    guides: list[str] = Field(default_factory=lambda: ["amortized", "per_datapoint", "semi_amortized"])
    gap_points: int = Field(200, gt=0)  # training points for the amortization/approximation gap decomposition
    elbo_samples: int = Field(100, gt=0)  # particles for each L[q] estimate in the gap table
    refine_ks: list[int] = Field(default_factory=lambda: [0, 1, 2, 5, 10, 20])  # semi-amortized steps at test
    qstar_init: Literal["zero", "encoder"] = "encoder"  # where the local optimum q* starts (Cremer et al.: zero)
    qstar_lr: float = Field(0.01, gt=0.0)
    qstar_max_steps: int = Field(3000, gt=0)
    qstar_window: int = Field(100, gt=0)  # stop when the mean ELBO of a window improves by less than qstar_tol
    qstar_tol: float = Field(0.01, ge=0.0)
    out_dir: str | None = None  # default runs/<config stem>


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    likelihood: LikelihoodConfig = Field(default_factory=LikelihoodConfig)
    guide: GuideConfig = Field(default_factory=GuideConfig)
    elbo: ElboConfig = Field(default_factory=ElboConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a table",
    "literal_error": None,
}


def _format_error(err: ValidationError, model: type[BaseModel]) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        section: type[BaseModel] = model
        for part in loc[:-1]:
            section = section.model_fields[part].annotation  # type: ignore[assignment]
        where = f"[{'.'.join(loc[:-1])}]" if len(loc) > 1 else "the top level"
        return f"unknown config key {key!r}; valid keys in {where}: {', '.join(section.model_fields)}"
    words = _TYPE_WORDS.get(first["type"])
    got = first.get("input")
    if words:
        return f"config key {key!r} must be {words}, got {got!r}"
    return f"config key {key!r}: {first['msg'].lower()}, got {got!r}"


def _check_names(cfg: Config) -> None:
    """Component names are checked against the registries (which import the components)."""
    from pyro_lvm import data, elbos, guides, likelihoods, models, optim, priors

    if cfg.elbo.name in ("jit_trace", "jit_mean_field"):
        raise PyroLVMError(
            f"config key 'elbo.name': {cfg.elbo.name!r} is now elbo.name = {cfg.elbo.name[4:]!r} with "
            "elbo.jit = 'on' (the default, 'auto', compiles wherever it can)"
        )
    for key, registry in [
        ("data.name", data.DATASETS),
        ("model.name", models.MODELS),
        ("prior.name", priors.PRIORS),
        ("likelihood.name", likelihoods.LIKELIHOODS),
        ("guide.name", guides.GUIDES),
        ("elbo.name", elbos.ELBOS),
        ("optim.name", optim.OPTIMS),
    ]:
        section, field = key.split(".")
        name = getattr(getattr(cfg, section), field)
        if name not in registry:
            raise PyroLVMError(
                f"config key {key!r}: unknown {registry.kind} {name!r}; registered: {', '.join(registry.names())}"
            )
    from pyro_lvm.guides import GUIDES

    for name in cfg.compare.guides:
        if name not in GUIDES:
            raise PyroLVMError(
                f"config key 'compare.guides': unknown guide {name!r}; registered: {', '.join(GUIDES.names())}"
            )
    if cfg.elbo.jit == "on" and cfg.elbo.name not in elbos.JIT_FORMS:
        raise PyroLVMError(
            f"elbo.jit = 'on' needs an ELBO with a compiled form ({', '.join(elbos.JIT_FORMS)}); "
            f"{cfg.elbo.name!r} has none: use elbo.jit = 'auto' or 'off'"
        )
    if cfg.model.name == "cvae" and cfg.model.condition == "none":
        raise PyroLVMError("model 'cvae' needs model.condition = 'label' or 'quadrants'")
    if cfg.model.name == "vae" and cfg.model.condition != "none":
        raise PyroLVMError("model 'vae' takes no condition; use model.name = 'cvae' to condition on c")
    if cfg.prior.per_class and (cfg.prior.name != "mog" or cfg.model.condition != "label"):
        raise PyroLVMError(
            "prior.per_class gives each class its own mixture component: it needs prior.name = 'mog' "
            "and model.condition = 'label'"
        )
    if cfg.baseline.feed_prior and (cfg.model.condition != "quadrants" or cfg.prior.name != "conditional"):
        raise PyroLVMError(
            "baseline.feed_prior feeds the NN baseline's completion to the prior network: it needs "
            "model.condition = 'quadrants' and prior.name = 'conditional'"
        )


def from_dict(raw: dict[str, Any]) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise PyroLVMError(_format_error(err, Config)) from None
    _check_names(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=v`` -> (["a", "b"], v); v is read as a TOML value, or kept as a bare string if it is not one."""
    if "=" not in text:
        raise PyroLVMError(f"override {text!r} must look like section.key=value, e.g. train.steps=100")
    key, value = text.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise PyroLVMError(f"override {text!r} must name section.key, e.g. guide.name=per_datapoint")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PyroLVMError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML config, apply ``--set`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise PyroLVMError(f"config file {str(path)!r} not found; pass the path of a .toml file (see experiments/)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise PyroLVMError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    return from_dict(apply_overrides(raw, overrides or []))


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of ``cfg`` with ``--set``-style overrides applied and validated."""
    return from_dict(apply_overrides(to_dict(cfg), overrides))


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump(exclude_none=True)


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(to_dict(cfg)))

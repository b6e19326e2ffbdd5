"""The experiment schema: load TOML, apply ``--set section.key=value`` overrides, validate, save.

Validation happens before anything runs and every error is one line that names the key: an unknown key lists
the valid keys of its section (for a component section, the options *of the component it names*, and which other
component owns the key), an unknown component name lists the registered names, a wrong type names the expected
type. Component sections ([data], [model], [prior], [likelihood], [guide], [elbo], [optim]) are validated against
the option schema their component registered (``pyro_lvm.registry``); this module imports no component module.
The fixed sections ([train], [eval], [baseline], [compare]) are defined here.
"""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import BeforeValidator, Field, SerializeAsAny, ValidationError

from pyro_lvm.config.checks import check_combinations
from pyro_lvm.config.messages import format_error
from pyro_lvm.config.sections import BaselineConfig, CompareConfig, EvalConfig, TrainConfig, _Section
from pyro_lvm.config.trust import import_run_plugins
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import SECTIONS, Options, load_plugins


def _component(section: str) -> tuple[Any, Any]:
    """(validator, default) of a section validated against the schema of the component it names."""
    registry = SECTIONS[section]

    def validate(raw: Any) -> Options:
        if isinstance(raw, Options):  # assigned in Python: it must be this section's kind of options
            name = getattr(raw, "name", None)
            if name not in registry or not isinstance(raw, registry.schema(name)):
                raise PyroLVMError(
                    f"config section [{section}] takes the options of a registered {registry.kind}, got "
                    f"{type(raw).__name__}; build them with config_from_dict or with_overrides"
                )
            return raw
        if not isinstance(raw, dict):
            raise PyroLVMError(f"config section [{section}] must be a table, got {raw!r}")
        name = raw.get("name", registry.default)
        if not isinstance(name, str):
            raise PyroLVMError(f"config key '{section}.name' must be a string, got {name!r}")
        _check_renamed(section, name)
        if name not in registry:
            raise PyroLVMError(
                f"config key '{section}.name': unknown {registry.kind} {name!r}; registered: "
                f"{', '.join(registry.names())}"
            )
        schema = registry.schema(name)
        try:
            return schema.model_validate({**raw, "name": name})
        except ValidationError as err:
            raise PyroLVMError(format_error(err, schema, section, registry)) from None

    return BeforeValidator(validate), Field(default_factory=lambda: registry.schema(registry.default)())


def _section(name: str) -> Any:
    validator, default = _component(name)
    return Annotated[SerializeAsAny[Options], validator], default


_DataT, _data = _section("data")
_ModelT, _model = _section("model")
_PriorT, _prior = _section("prior")
_LikelihoodT, _likelihood = _section("likelihood")
_GuideT, _guide = _section("guide")
_ElboT, _elbo = _section("elbo")
_OptimT, _optim = _section("optim")


class Config(_Section):
    """The whole experiment. Each component section holds the chosen component's own options (its schema)."""

    plugins: list[str] = Field(default_factory=list)  # the user's modules that register components
    data: _DataT = _data
    model: _ModelT = _model
    prior: _PriorT = _prior
    likelihood: _LikelihoodT = _likelihood
    guide: _GuideT = _guide
    elbo: _ElboT = _elbo
    optim: _OptimT = _optim
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)


def _check_renamed(section: str, name: str) -> None:
    if section == "elbo" and name in ("jit_trace", "jit_mean_field"):
        raise PyroLVMError(
            f"config key 'elbo.name': {name!r} is now elbo.name = {name[4:]!r} with "
            "elbo.jit = 'on' (the default, 'auto', compiles wherever it can)"
        )


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a config given as nested dicts (the TOML's tables); ``plugins`` are imported first."""
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise PyroLVMError(f"config key 'plugins' must be a list of module names, got {plugins!r}")
    load_plugins(plugins)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise PyroLVMError(format_error(err, Config)) from None
    check_combinations(cfg)
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


def foreign_options(section: str, table: dict[str, Any], name: str) -> list[str]:
    """The keys of a [section] table that component ``name`` of that section does not have (``name`` aside)."""
    fields = SECTIONS[section].schema(name).model_fields
    return [key for key in table if key not in fields]


def _switch_component(raw: dict[str, Any], section: str, name: Any, overridden: set[tuple[str, str]]) -> None:
    """``--set guide.name=X`` on a config written for another guide: its [guide] options that X does not have are
    dropped, with a note naming them. An option given with --set is never dropped: that is an error."""
    table = raw.get(section)
    registry = SECTIONS[section]
    if not isinstance(table, dict) or not isinstance(name, str) or name not in registry:
        return
    old = table.get("name", registry.default)
    if old == name:
        return
    dropped = foreign_options(section, table, name)
    fields = registry.schema(name).model_fields
    for key in dropped:
        if (section, key) in overridden:
            raise PyroLVMError(
                f"--set {section}.{key} was given, but {registry.kind} {name!r} (set by --set {section}.name) has "
                f"no option {key!r}; its options: {', '.join(f for f in fields if f != 'name') or '(none)'}"
            )
        del table[key]
    if dropped:
        warnings.warn(
            f"{section}.name = {name!r}: the [{section}] keys {', '.join(dropped)} are options of {old!r}, "
            f"not of {name!r}, and are not used",
            stacklevel=3,
        )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    parsed = [(text, *parse_override(text)) for text in overrides]
    plugins = raw.get("plugins", [])
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        load_plugins(plugins)  # before a --set names one of their components
    overridden: set[tuple[str, str]] = set()
    for text, path, value in parsed:
        if len(path) == 2 and path[1] == "name" and path[0] in SECTIONS:
            _switch_component(raw, path[0], value, overridden)
        overridden.add((path[0], path[1]))
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PyroLVMError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML config file, or one line saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise PyroLVMError(f"config file {str(path)!r} not found; pass the path of a .toml file (see experiments/)")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PyroLVMError(f"config file {str(path)!r} is not valid TOML: {err}") from None


def prune_foreign_options(raw: dict[str, Any]) -> None:
    """A run folder written before components owned their options saved every key of every section; keys the
    chosen component does not have were unused defaults, and are dropped."""
    for section, registry in SECTIONS.items():
        table = raw.get(section)
        if isinstance(table, dict) and table.get("name", registry.default) in registry:
            for key in foreign_options(section, table, table.get("name", registry.default)):
                del table[key]


def load(
    path: str | Path,
    overrides: list[str] | None = None,
    plugins: list[str] | None = None,
    saved: bool = False,
    trust_plugins: bool = False,
) -> Config:
    """Read a TOML config, add ``plugins`` (``--plugin``), apply ``--set`` overrides, validate. ``saved``: the
    file is a run folder's resolved config (see ``prune_foreign_options``), whose own plugins are imported only as
    ``trust.import_run_plugins`` allows (``plugins`` given here, or ``trust_plugins``)."""
    raw = read_toml(path)
    if not raw and not saved:
        # Refused, not noted: a zero-byte (or comments-only) file is an accident (a failed copy, an unsaved editor
        # buffer), and training on every default would look like a real run of it.
        raise PyroLVMError(
            f"config file {str(path)!r} is empty (no table or key); to train on every default, say so with one "
            "table, e.g. [train], or copy a config from experiments/"
        )
    if saved:
        import_run_plugins(raw.get("plugins", []), Path(path).parent, allow=plugins or (), trust=trust_plugins)
        prune_foreign_options(raw)
    if plugins:  # imported by apply_overrides, before any --set names their components
        raw["plugins"] = [*raw.get("plugins", []), *(p for p in plugins if p not in raw.get("plugins", []))]
    return from_dict(apply_overrides(raw, overrides or []))


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of ``cfg`` with ``--set``-style overrides applied and validated."""
    return from_dict(apply_overrides(to_dict(cfg), overrides))


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump(exclude_none=True)


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(to_dict(cfg)))

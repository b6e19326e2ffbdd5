"""One-line messages for pydantic validation errors: the key, what was expected, and what was given."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from pyro_lvm.registry import Registry

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


def format_error(
    err: ValidationError, model: type[BaseModel], prefix: str = "", registry: Registry | None = None
) -> str:
    first = err.errors()[0]
    loc = [prefix, *map(str, first["loc"])] if prefix else [str(p) for p in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden" and registry is not None:
        name = model.model_fields["name"].default
        owners = [n for n in registry.owner_of(loc[-1]) if n != name]
        hint = f" ({loc[-1]!r} is an option of {registry.kind} {', '.join(map(repr, owners))})" if owners else ""
        return (
            f"unknown config key {key!r}: {registry.kind} {name!r} has the options "
            f"{', '.join(f for f in model.model_fields if f != 'name') or '(none)'}{hint}"
        )
    if first["type"] == "extra_forbidden":
        section: type[BaseModel] = model
        for part in loc[:-1]:
            section = section.model_fields[part].annotation  # type: ignore[assignment]
        where = f"[{'.'.join(loc[:-1])}]" if len(loc) > 1 else "the top level"
        return f"unknown config key {key!r}; valid keys in {where}: {', '.join(section.model_fields)}"
    if first["type"] == "missing" and registry is not None and loc[-1] in model.model_fields:
        field = model.model_fields[loc[-1]]
        choices = getattr(field.annotation, "__args__", ())
        values = f" = {' or '.join(map(repr, choices))}" if choices else ""
        return f"{registry.kind} {model.model_fields['name'].default!r} needs {key}{values}"
    if first["type"] == "missing":
        return f"config key {key!r} is required"
    words = _TYPE_WORDS.get(first["type"])
    got = first.get("input")
    if words:
        return f"config key {key!r} must be {words}, got {got!r}"
    msg = first["msg"].lower().removeprefix("value error, ")
    return f"config key {key!r}: {msg}, got {got!r}"

"""Validated, typed configuration: nested dataclasses built from YAML-like dicts.

Every layer describes its settings as frozen dataclasses with defaults; `build` turns a
plain dict into them and rejects unknown keys and wrong types with a message that names
the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")

# YAML 1.1 (PyYAML) reads 1e-3 and 1e38 as text: it wants a dot in the mantissa. A float
# setting accepts such text when it is a plain decimal number.
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration value or key is not allowed; the message says which and why.

    `key`, when given, is the key (relative to the section whose `validate()` raised it)
    that `build` puts in front of the message as a full dotted path. `located`: the message
    already names its full path (an error of a nested `build`), so it passes up unchanged."""

    def __init__(self, message: str, key: str | None = None, located: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.located = located


def not_allowed(key: str, value: Any, allowed: str) -> ConfigError:
    """The error for one bad value: `key: value is not allowed; allowed`."""
    return ConfigError(f"{value!r} is not allowed; {allowed}", key=key)


def build(cls: type[T], data: dict | None, path: str = "") -> T:
    """Build dataclass `cls` from `data`, filling defaults and validating every value."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__} {data!r}", located=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"{path}." if path else ""
    # YAML keys need not be text (`1:`, `on:`), so sort by their text
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        hint = getattr(cls, "unknown_key_hint", "")  # a section may say where such keys belong
        raise ConfigError(
            f"unknown key {where}{unknown[0]}; allowed keys here: {', '.join(sorted(fields)) or 'none'}"
            + (f" ({hint})" if hint else ""),
            located=True,
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key {where}{missing[0]}; this section needs {', '.join(missing)}", located=True)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        default = fields[name].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            # a partial section overrides only what it names: keep this field's own defaults
            value = merge(to_dict(default), value)
        # a field whose type is made at build time (a section built from a registry) names
        # the function that makes it in its metadata
        hint = fields[name].metadata.get("type", lambda: hints[name])()
        values[name] = _coerce(hint, value, f"{path}.{name}" if path else name)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as err:
            if err.located:
                raise
            if err.key is not None:
                raise ConfigError(f"{where}{err.key}: {err}", located=True) from None
            raise ConfigError(f"{path or '<root>'}: {err}", located=True) from None
    return obj


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {hint}", located=True)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{path}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}", located=True
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}", located=True)
        (item,) = get_args(hint)[:1] or (Any,)
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}", located=True)
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(
                f"{path}: expected float, got an integer of {len(str(value))} digits, too large for a float",
                located=True,
            ) from None
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{path}: expected {hint.__name__}, got the boolean {value!r}", located=True)
    if not isinstance(value, hint):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {type(value).__name__} {value!r}", located=True)
    return value


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config dataclass (for writing the resolved config.yaml)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # super() rejects it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML like yaml.safe_load, but reject a key given twice in one mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Apply one `--set key.path=value` override to a nested dict."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[keys[-1]] = value


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out

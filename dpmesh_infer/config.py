"""Strict JSON-backed configuration dataclasses.

Every stage has a frozen dataclass config. ``from_dict`` rejects unknown keys and missing required
keys with a :class:`~dpmesh_infer.errors.ConfigError` naming them; ``to_dict`` produces plain JSON types.
Nested dataclasses and tuples are supported (tuples are written as JSON lists).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, DpmeshError

T = TypeVar("T", bound="ConfigBase")


def read_json(path: str | Path, *, error: type[DpmeshError] = ConfigError, what: str = "JSON file",
              hint: str = "") -> Any:
    """Parse a user's JSON file. A UTF-8 byte-order mark is accepted; every failure (missing, not a regular
    file, unreadable, not UTF-8, invalid JSON, nested too deeply) is an ``error`` naming the file (``hint``,
    e.g. the expected format, is appended when the content is not valid JSON).
    """
    from .inputs import path_problem

    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise error(f"{what} {path} {problem}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
                    + (f"; {hint}" if hint else "")) from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply (over {sys.getrecursionlimit()} levels) for a {what}") from None


def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    return value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, ConfigBase):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        return tp.from_dict(value, _where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: value {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base of all config dataclasses: strict dict/JSON round trip."""

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], *, _where: str | None = None) -> T:
        where = _where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed keys are {sorted(fields)}")
        kwargs = {}
        missing = []
        for name, f in fields.items():
            if name in data:
                kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(name)
        if missing:
            raise ConfigError(f"{where}: missing required keys {missing}")
        try:
            return cls(**kwargs)
        except ConfigError as e:  # a value check in __post_init__: say where the value came from
            raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save_json(self, path: str | Path) -> None:
        from .atomic import write_text

        write_text(path, self.to_json() + "\n")

    @classmethod
    def load_json(cls: type[T], path: str | Path) -> T:
        """Read ``path`` (a ConfigError names the file for every problem, including invalid values)."""
        return cls.from_dict(read_json(path, what=f"{cls.__name__} config"), _where=str(path))

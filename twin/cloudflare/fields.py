"""Request-body shapes: which fields an endpoint accepts, their JSON types, enumerations and ranges.

A :class:`Spec` describes one JSON value; :func:`check_object` walks a request body against an object
spec and raises :class:`FieldError` (path and problem) at the first field that does not fit: a field
the endpoint does not know, a wrong type, a value outside its enumeration or range. Each API module
turns a ``FieldError`` into that API's own error code (load balancing answers 1002 "validation
failed", DNS 1004 "DNS Validation Error", tunnels 1056 "Bad Configuration").

Shapes and ranges come from Cloudflare's OpenAPI schema (cloudflare/api-schemas) unless a module
says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


class FieldError(ValueError):
    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Spec:
    kind: str  # string | bool | int | number | list | map | object | any
    item: Optional["Spec"] = None  # list items, map values
    fields: Mapping[str, "Spec"] = field(default_factory=dict)  # object fields
    choices: tuple = ()  # allowed values (strings compare case-insensitively, as Cloudflare does)
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    nullable: bool = True


def string(*choices: str, nullable: bool = True) -> Spec:
    return Spec("string", choices=tuple(choices), nullable=nullable)


def boolean() -> Spec:
    return Spec("bool")


def integer(minimum: Optional[float] = None, maximum: Optional[float] = None) -> Spec:
    return Spec("int", minimum=minimum, maximum=maximum)


def number(minimum: Optional[float] = None, maximum: Optional[float] = None) -> Spec:
    return Spec("number", minimum=minimum, maximum=maximum)


def list_of(item: Spec) -> Spec:
    return Spec("list", item=item)


def map_of(item: Spec) -> Spec:
    return Spec("map", item=item)


def obj(**fields: Spec) -> Spec:
    return Spec("object", fields=fields)


ANY = Spec("any")
STRING_LIST = list_of(string(nullable=False))
POOL_MAP = map_of(STRING_LIST)  # region/pop/country -> pool ids


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(spec: Spec, value: Any, path: str) -> None:
    if value is None:
        if not spec.nullable:
            raise FieldError(path, "must not be null")
        return
    kind = spec.kind
    if kind == "any":
        return
    if kind == "string":
        if not isinstance(value, str):
            raise FieldError(path, f"must be a string, not {type(value).__name__}")
        if spec.choices and value.lower() not in {c.lower() for c in spec.choices}:
            raise FieldError(path, f"'{value}' is not one of {', '.join(repr(c) for c in spec.choices)}")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise FieldError(path, f"must be a boolean, not {type(value).__name__}")
        return
    if kind in ("int", "number"):
        if not _is_number(value):
            raise FieldError(path, f"must be a number, not {type(value).__name__}")
        if kind == "int" and float(value) != int(value):
            raise FieldError(path, f"must be an integer, not {value}")
        if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
            raise FieldError(path, f"{value} is not in range [{_fmt(spec.minimum)}, {_fmt(spec.maximum)}]")
        return
    if kind == "list":
        if not isinstance(value, list):
            raise FieldError(path, f"must be a list, not {type(value).__name__}")
        for index, item in enumerate(value):
            check_value(spec.item, item, f"{path}[{index}]")
        return
    if kind == "map":
        if not isinstance(value, dict):
            raise FieldError(path, f"must be an object, not {type(value).__name__}")
        for key, item in value.items():
            check_value(spec.item, item, _join(path, key))
        return
    if kind == "object":
        check_object(spec, value, path)
        return
    raise AssertionError(f"unknown spec kind {kind}")


def check_object(spec: Spec, body: Any, path: str = "") -> None:
    if not isinstance(body, dict):
        raise FieldError(path, f"must be an object, not {type(body).__name__}")
    for key, value in body.items():
        field_spec = spec.fields.get(key)
        if field_spec is None:
            raise FieldError(_join(path, key), "unknown field")
        check_value(field_spec, value, _join(path, key))


def _fmt(bound: Optional[float]) -> str:
    if bound is None:
        return "..."
    return str(int(bound)) if float(bound).is_integer() else str(bound)

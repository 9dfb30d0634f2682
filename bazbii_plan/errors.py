"""Config errors that name the key to fix, one line per problem."""

from __future__ import annotations

from typing import Iterable

from pydantic import ValidationError
from pydantic_core import ErrorDetails

NAMESPACE = "bazbii"


def format_path(path: Iterable) -> str:
    """``("traffic", "pools", "server2", "weight")`` -> ``traffic.pools.server2.weight``; ints become ``[i]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def config_key(path: Iterable) -> str:
    return f"{NAMESPACE}:{format_path(path)}"


PATTERN_WORDS: dict[str, str] = {}  # a Field pattern -> what it asks for, in words (see pattern())


def pattern(regex: str, words: str) -> str:
    """A Field pattern, registered with the words a config error says instead of the regex."""
    if PATTERN_WORDS.setdefault(regex, words) != words:  # one regex, one meaning in every error
        raise ValueError(f"pattern {regex!r} is already registered as {PATTERN_WORDS[regex]!r}")
    return regex


class ConfigError(Exception):
    """Bad stack config: every problem is one line ``bazbii:<key path>: <what is wrong>``."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))  # keep order, drop repeats
        super().__init__("\n".join(self.problems))


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _friendly(error: ErrorDetails) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return {
            "greater_than_equal": f"must be >= {ctx.get('ge')}",
            "less_than_equal": f"must be <= {ctx.get('le')}",
            "greater_than": f"must be > {ctx.get('gt')}",
            "less_than": f"must be < {ctx.get('lt')}",
        }[kind]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; keys are camelCase)"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        regex = ctx.get("pattern")
        words = PATTERN_WORDS.get(regex) if isinstance(regex, str) else None
        got = error.get("input")
        shown = f" (got {got!r})" if isinstance(got, str) else ""
        return f"must be {words}{shown}" if words else f"does not match the expected form {ctx.get('pattern')}{shown}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    return _clean_message(error.get("msg", "invalid"))


def pydantic_problems(exc: ValidationError, prefix: tuple = ()) -> list[tuple[tuple, str]]:
    """Turn a pydantic error into ``(path, message)`` pairs, dropping the union-branch noise."""
    problems = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part in ("int", "str")))
        problems.append((prefix + loc, _friendly(error)))
    return problems


def render(problems: list[tuple[tuple, str]], prefix: str = "") -> list[str]:
    lines = []
    for path, message in problems:
        key = config_key(path) if path else f"{NAMESPACE}"
        lines.append(f"{prefix}{key}: {message}")
    return lines

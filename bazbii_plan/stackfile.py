"""Read a ``Pulumi.<stack>.yaml`` file the way the Pulumi CLI hands it to the program.

Used offline (no CLI): keys under ``config:`` in the ``bazbii`` namespace are
returned without the namespace; ``secure:`` values are secrets whose ciphertext
cannot be opened here, so they are reported as secret keys with a placeholder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, NAMESPACE

OFFLINE_SECRET_PLACEHOLDER = "offline-placeholder-secret"


def read_stack_file(path: str | Path) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    """Return ``(bazbii values, secret keys, other namespaces' values)``."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: stack file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the stack file: {getattr(exc, 'strerror', None) or exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{path}: not valid YAML{where}: {what}"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise ConfigError([f"{path}: expected a mapping with a 'config:' mapping"])
    values: dict[str, Any] = {}
    secrets: set[str] = set()
    others: dict[str, Any] = {}
    for full_key, value in (document.get("config") or {}).items():
        namespace, _, key = str(full_key).partition(":")
        if not key:
            raise ConfigError([f"{path}: config key {full_key!r} has no namespace"])
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = OFFLINE_SECRET_PLACEHOLDER
            if namespace == NAMESPACE:
                secrets.add(key)
        if namespace == NAMESPACE:
            values[key] = value
        else:
            others[full_key] = value
    return values, secrets, others


def fill_secret_placeholders(values: dict[str, Any], secret_keys: set[str], names) -> list[str]:
    """Give every secret in ``names`` that the stack file does not hold (it is set with the CLI) a marked
    placeholder, as a secret, for offline tools; returns the keys filled, in order."""
    filled = [key for key in names if key not in values]
    for key in filled:
        values[key] = OFFLINE_SECRET_PLACEHOLDER
        secret_keys.add(key)
    return filled


def set_config_value(text: str, full_key: str, old: str, new: str) -> str:
    """The stack file ``text`` with the top-level config value ``full_key`` changed from ``old`` to ``new``.

    What ``pulumi config set`` would store, written as one edited line so the file keeps its comments and
    layout (a rollback commit is then a one-line diff). ValueError, naming the key, when the file does not
    hold ``full_key: old`` on one line of its ``config:`` mapping, or the edit would change anything else.
    """
    line = re.compile(rf"^(?P<head>[ \t]+{re.escape(full_key)}:[ \t]*)(?P<quote>['\"]?){re.escape(old)}(?P=quote)"
                      rf"(?P<tail>[ \t]*(#.*)?)$", re.MULTILINE)
    found = line.findall(text)
    if len(found) != 1:
        raise ValueError(f"{full_key}: expected one line '{full_key}: {old}' in the stack file, found {len(found)}")
    edited = line.sub(lambda m: f"{m['head']}{m['quote']}{new}{m['quote']}{m['tail']}", text)
    before, after = yaml.safe_load(text), yaml.safe_load(edited)
    expected = dict(before, config=dict(before.get("config") or {}, **{full_key: new}))
    if after != expected:
        raise ValueError(f"{full_key}: editing the line '{full_key}: {old}' would change more than that value")
    return edited

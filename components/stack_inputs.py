"""Read the ``bazbii:*`` stack config from the Pulumi runtime and validate it before anything is registered."""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from bazbii_plan.errors import NAMESPACE, ConfigError
from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config, rehearsal_only_problems


def _parse(raw: Any) -> Any:
    # The CLI hands structured values to the program as JSON text; plain strings stay strings.
    if isinstance(raw, str) and raw[:1] in ("{", "[", '"'):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def read_raw_config() -> tuple[dict[str, Any], set[str]]:
    """All ``bazbii:*`` values (namespace stripped) and which of them are stored as secrets."""
    prefix = f"{NAMESPACE}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    values: dict[str, Any] = {}
    secrets: set[str] = set()
    for full_key in sorted(keys):
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        values[key] = _parse(runtime_config.get_config(full_key))
        if runtime_config.is_config_secret(full_key) or full_key in secret_keys:
            secrets.add(key)
    return values, secrets


CONFIG_REFUSED = "invalid stack config"


def stop_on_config_errors(lines: list[str]) -> None:
    """One error line per problem, then a clean non-zero stop (RunError: no traceback in the CLI)."""
    if lines:
        for line in lines:
            pulumi.log.error(line)
        raise pulumi.RunError(f"{CONFIG_REFUSED} ({len(lines)} problem(s)); nothing was registered")


def load_or_stop() -> StackConfig:
    """The validated stack config; on bad config, one error line per problem and a clean non-zero stop."""
    values, secrets = read_raw_config()
    try:
        config = load_stack_config(values, secrets)
    except ConfigError as exc:
        stop_on_config_errors(exc.problems)
        raise  # unreachable: ConfigError always carries at least one problem
    stop_on_config_errors(rehearsal_only_problems(config, pulumi.get_stack()))
    return config


def secret(key: str) -> pulumi.Output[str]:
    """A secret config value; only ever handled as a Pulumi secret Output."""
    assert key in SECRET_KEYS, key
    return pulumi.Config(NAMESPACE).require_secret(key)

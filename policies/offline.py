"""Run the pack's policy objects on resources captured by the offline harness (no Pulumi CLI, no engine).

:func:`run_policies` drives exactly the objects in :data:`policies.pack.POLICIES`
through their real ``validate`` callables, with ``pulumi_policy``'s own
``ResourceValidationArgs`` / ``StackValidationArgs``, and reproduces what the
CLI and the SDK's analyzer server do around them:

* props and policy config pass through a protobuf ``Struct``, so integers
  arrive as floats, and props are wrapped in the SDK's unknown-checking proxy;
* a policy that reads a value unknown at preview is reported as an ADVISORY
  "can't run policy ... during preview" (the SDK's downgrade), never silently passed;
* enforcement levels: per-policy config ``enforcementLevel`` > ``all`` > the
  policy's own level > the pack default; ``disabled`` skips the policy;
* config is validated against each policy's schema, and schema defaults are
  filled in, before it is handed to ``get_config()``.

Stack policies receive the captured *inputs* as props (a real ``AnalyzeStack``
sees outputs; the rules only read values that are inputs too).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import jsonschema
from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import PolicyCustomTimeouts
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from .pack import DEFAULT_ENFORCEMENT, PACK_NAME, POLICIES
from .rules.common import plain

STACK_TYPE = "pulumi:pulumi:Stack"
LEVELS = {level.value: level for level in EnforcementLevel}


@dataclass(frozen=True)
class Violation:
    policy_name: str
    enforcement: str  # "mandatory" | "advisory" (a REMEDIATE level reports as mandatory, as the SDK does)
    resource_type: str
    resource_name: str
    urn: str
    message: str

    @property
    def mandatory(self) -> bool:
        return self.enforcement == EnforcementLevel.MANDATORY.value


class PolicyConfigError(ValueError):
    """Policy config that the Pulumi CLI would reject (unknown policy or property, wrong type)."""


# --------------------------------------------------------------------------- config
def _through_protobuf(value: Any) -> Any:
    """What a value looks like after a trip through a protobuf Struct (ints become floats)."""
    struct = struct_pb2.Struct()
    json_format.ParseDict({"v": value}, struct)
    return json_format.MessageToDict(struct)["v"]


def _level(value: Any, where: str) -> EnforcementLevel:
    if isinstance(value, EnforcementLevel):
        return value
    if isinstance(value, str) and value in LEVELS:
        return LEVELS[value]
    raise PolicyConfigError(f"{where}: enforcement level must be one of {sorted(LEVELS)}, not {value!r}")


@functools.lru_cache(maxsize=None)
def _validator(document: str) -> Any:
    """A checked validator per schema: ``jsonschema.validate`` re-checks the schema on every call, which was
    a tenth of ``./preview --all`` (every transition resolves the pack's config again)."""
    schema = json.loads(document)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validate_properties(policy: Policy, properties: dict[str, Any]) -> None:
    schema = policy.config_schema.properties if policy.config_schema else {}
    unknown = sorted(set(properties) - set(schema))
    if unknown:
        raise PolicyConfigError(
            f"{policy.name}: unknown config properties {unknown}; it accepts {sorted(schema) or 'none'}")
    document = {"type": "object", "properties": schema}
    if policy.config_schema and policy.config_schema.required:
        document["required"] = list(policy.config_schema.required)
    try:
        # the schema's own key order (not sorted): best_match breaks ties by it, as jsonschema.validate does
        error = jsonschema.exceptions.best_match(_validator(json.dumps(document)).iter_errors(properties))
        if error is not None:  # the error jsonschema.validate would raise
            raise error
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        message = exc.message
        if exc.validator == "not":  # jsonschema's text for `not` prints the sub-schema; say what the bound is
            described = schema.get(str(exc.absolute_path[0]), {}) if exc.absolute_path else {}
            message = f"{exc.instance!r} is not allowed ({described.get('description', 'outside the bounds')})"
        raise PolicyConfigError(f"{policy.name}: config {path or '(root)'}: {message}") from None


def resolve_config(
    config: Optional[Mapping[str, Any]], policies: Sequence[Policy] = POLICIES
) -> dict[str, tuple[EnforcementLevel, dict[str, Any]]]:
    """Per policy: (enforcement level, config as ``get_config()`` returns it).

    ``config`` has the shape of a ``--policy-pack-config`` file:
    ``{"all": "advisory", "<policy>": "disabled" | {"enforcementLevel": ..., "<property>": value}}``.
    """
    config = dict(config or {})
    by_name = {p.name: p for p in policies}
    unknown = sorted(k for k in config if k != "all" and k not in by_name)
    if unknown:
        raise PolicyConfigError(f"unknown policies in policy config: {unknown}; pack {PACK_NAME!r} has {sorted(by_name)}")
    all_level = None
    if "all" in config:
        value = config["all"]
        all_level = _level(value.get("enforcementLevel") if isinstance(value, Mapping) else value, "all")
    resolved = {}
    for policy in policies:
        entry = config.get(policy.name)
        level = policy.enforcement_level or DEFAULT_ENFORCEMENT
        if all_level is not None:
            level = all_level
        properties: dict[str, Any] = {}
        if isinstance(entry, Mapping):
            entry = dict(entry)
            if "enforcementLevel" in entry:
                level = _level(entry.pop("enforcementLevel"), policy.name)
            properties = copy.deepcopy(entry)
        elif entry is not None:
            level = _level(entry, policy.name)
        _validate_properties(policy, properties)
        schema = policy.config_schema.properties if policy.config_schema else {}
        for key, spec in schema.items():
            if key not in properties and "default" in spec:
                properties[key] = copy.deepcopy(spec["default"])
        resolved[policy.name] = (level, _through_protobuf(properties) if properties else {})
    return resolved


# --------------------------------------------------------------------------- resources
def _wire(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs as the analyzer deserializes them from the engine's request (numbers as floats, secrets unwrapped)."""
    return deserialize_properties(_through_protobuf(dict(inputs)))


def _props(wired: dict[str, Any]) -> Mapping[str, Any]:
    """A fresh unknown-checking proxy (it copies the containers, so no policy sees another's view)."""
    return unknown_checking_proxy(wired)


class _Wired:
    """One resource's inputs as the analyzer receives them, with a plain copy for each policy that asks."""

    def __init__(self, inputs: Mapping[str, Any]) -> None:
        self.data = _wire(inputs)
        self._document: Optional[str] = None
        self._unknown = False

    def plain(self) -> Optional[dict[str, Any]]:
        """A fresh plain copy of the props (from JSON: a C-speed deep copy); None when they hold a value unknown
        at preview (or one JSON cannot hold), so that the policy reads its proxy, which raises as under the CLI."""
        if self._document is None and not self._unknown:
            try:
                plain(_props(self.data))  # reads every value: raises on an unknown one
                self._document = json.dumps(self.data)
            except (UnknownValueError, TypeError, ValueError):
                self._unknown = True
        return None if self._document is None else json.loads(self._document)


class _LazyProps:
    """``props`` (a deep-copying proxy) made only when a policy reads them: most policies look at the type
    first and return, and making every proxy was a fifth of ``--all``; ``plain_props()`` for the gate."""

    _wired: _Wired
    _proxy: Optional[Mapping[str, Any]] = None

    @property
    def props(self) -> Mapping[str, Any]:
        if self._proxy is None:
            self._proxy = _props(self._wired.data)
        return self._proxy

    @props.setter
    def props(self, value: Any) -> None:
        self._proxy = value

    def plain_props(self) -> Optional[dict[str, Any]]:
        return self._wired.plain()


class _LazyArgs(_LazyProps, ResourceValidationArgs):
    """The SDK's arguments of a resource policy, with lazy props."""

    def __init__(self, wired: _Wired, *args: Any) -> None:
        self._wired = wired
        super().__init__(*args)


class _LazyResource(_LazyProps, PolicyResource):
    """A stack policy's view of one resource, with lazy props."""

    def __init__(self, wired: _Wired, *args: Any) -> None:
        self._wired = wired
        super().__init__(*args)


def _options(resource: Any) -> PolicyResourceOptions:
    options = getattr(resource, "options", None) or {}
    return PolicyResourceOptions(
        protect=bool(options.get("protect", False)),
        ignore_changes=list(options.get("ignoreChanges", [])),
        delete_before_replace=options.get("deleteBeforeReplace") or None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=list(options.get("additionalSecretOutputs", [])),
        parent=getattr(resource, "parent", None) or None,
    )


def _run(result: Any) -> None:
    if inspect.isawaitable(result):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(result)
        finally:
            loop.close()


def _is_not_applicable(exc: BaseException) -> bool:
    return type(exc).__name__ == "_NotApplicableError"


def _report_level(level: EnforcementLevel) -> str:
    return (EnforcementLevel.MANDATORY if level == EnforcementLevel.REMEDIATE else level).value


def run_policies(
    resources: Iterable[Any],
    config: Optional[Mapping[str, Any]] = None,
    *,
    policies: Sequence[Policy] = POLICIES,
    stack_tags: Optional[Mapping[str, str]] = None,
    resource_policies_only: bool = False,
) -> list[Violation]:
    """Every violation the pack reports for ``resources`` (harness ``RegisteredResource`` objects).

    ``resources`` need ``urn``, ``type``, ``name``, ``inputs`` (and optionally
    ``parent``, ``dependencies``, ``options``). Raises :class:`PolicyConfigError`
    for config the CLI would reject. ``resource_policies_only``: skip the stack policies (the engine runs the
    resource policies as each resource registers, the stack policies once at the end).
    """
    resources = [r for r in resources if r.type != STACK_TYPE]
    resolved = resolve_config(config, policies)
    tags = dict(stack_tags or {})
    props_of = {id(r): _Wired(r.inputs) for r in resources}
    by_urn = {r.urn: r for r in resources}
    violations: list[Violation] = []

    for policy in policies:
        level, policy_config = resolved[policy.name]
        if level == EnforcementLevel.DISABLED:
            continue
        reported = _report_level(level)

        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                def report_resource(message: str, urn: Optional[str] = None, _r=resource) -> None:
                    violations.append(Violation(policy.name, reported, _r.type, _r.name, urn or _r.urn, message))

                args = _LazyArgs(props_of[id(resource)], resource.type, None, resource.urn, resource.name,
                                 _options(resource), None, policy_config, tags)
                try:
                    _run(policy.validate(args, report_resource))
                except UnknownValueError as exc:
                    violations.append(Violation(
                        policy.name, EnforcementLevel.ADVISORY.value, resource.type, resource.name, resource.urn,
                        f"can't run policy '{policy.name}' from policy pack '{PACK_NAME}' during preview: {exc.message}"))
                except Exception as exc:  # noqa: BLE001 - not-applicable is private in the SDK
                    if not _is_not_applicable(exc):
                        raise

        elif isinstance(policy, StackValidationPolicy) and not resource_policies_only:
            policy_resources = {
                r.urn: _LazyResource(props_of[id(r)], r.type, None, r.urn, r.name, _options(r), None, None, [], {})
                for r in resources
            }
            for r in resources:
                pr = policy_resources[r.urn]
                pr.parent = policy_resources.get(getattr(r, "parent", "") or "")
                pr.dependencies = [policy_resources[d] for d in getattr(r, "dependencies", ()) if d in policy_resources]

            def report_stack(message: str, urn: Optional[str] = None) -> None:
                target = by_urn.get(urn or "")
                violations.append(Violation(policy.name, reported, target.type if target else STACK_TYPE,
                                            target.name if target else "", urn or "", message))

            try:
                _run(policy.validate(StackValidationArgs(list(policy_resources.values()), policy_config, tags), report_stack))
            except UnknownValueError as exc:
                violations.append(Violation(
                    policy.name, EnforcementLevel.ADVISORY.value, STACK_TYPE, "", "",
                    f"can't run policy '{policy.name}' from policy pack '{PACK_NAME}' during preview: {exc.message}"))
            except Exception as exc:  # noqa: BLE001
                if not _is_not_applicable(exc):
                    raise
    return violations


def mandatory(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.mandatory]


def format_violation(v: Violation) -> str:
    where = f"{v.resource_type} {v.resource_name}".strip() if v.resource_name else "stack"
    return f"[{v.enforcement}] {v.message} ({where})"


def sql_judgements(resources: Iterable[Any]) -> list[str]:
    """Which analysis judged the SQL of each migration ConfigMap among ``resources`` (static rules, or with a
    shadow run when $BAZBII_SHADOW_DSN names a server): the offline preview prints it as a note."""
    from .builders import CONFIG_MAP
    from .rules.schema import judgements

    return judgements(_wire(r.inputs) for r in resources if r.type == CONFIG_MAP)

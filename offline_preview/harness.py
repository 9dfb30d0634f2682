"""Run the real Pulumi program in-process under the SDK's mocks and capture what it registers.

There is no Pulumi CLI or engine here, so the program is evaluated with
``pulumi.runtime.set_mocks`` (the SDK's own unit-test mode). A capturing mock
monitor records every resource registration the program makes: type, name,
URN, parent, dependencies and the *inputs* exactly as a CrossGuard policy would
see them (camelCase keys). Stack exports are captured too.

Each evaluation runs in a fresh ``contextvars.Context`` so that many phases
can be evaluated in one process (the SDKs are imported once).

What the mocks return for a resource's outputs: its inputs, plus a
deterministic fake ``id``; for the program's own StackReference (the
transition check reading the last applied record) the caller supplies the
outputs, which is how the "previous applied state" of an offline preview is
injected.

Engine-ordering mode (``engine_order=True``). Mocks answer every registration
at once; the real engine's ``RegisterResource`` returns only after the
resource was applied, and the SDK sends a registration only once everything
it depends on has returned (pulumi-engine-ordering.md). In this mode a
registration counts as *applied* only after its dependencies were (a
registration that arrives before one of its dependencies is an error), the
caller's ``admit`` hook runs when each resource registers (the offline
preview runs the check's provider ``check()`` and the gate policies there),
and a rejected registration stops the update: it is not applied, nothing that
waits for it is ever sent (the SDK awaits its URN), and every registration
that still arrives afterwards is refused as the engine refuses it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import hashlib
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRAM = REPO_ROOT / "__main__.py"
SECRET_MARKER = "[secret]"
STACK_REFERENCE_TYPE = "pulumi:pulumi:StackReference"


@dataclass
class RegisteredResource:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    inputs: dict[str, Any]
    secret_paths: frozenset = frozenset()
    dependencies: tuple[str, ...] = ()
    provider: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def redacted_inputs(self) -> dict[str, Any]:
        """Inputs with every secret value replaced by ``[secret]`` (safe to print)."""
        return _redact(self.inputs, self.secret_paths, ())


@dataclass(frozen=True)
class Rejection:
    """A registration the engine would reject (a failing provider check, a MANDATORY policy violation)."""

    urn: str
    reasons: tuple[str, ...]


class RegistrationRejected(Exception):
    """Raised to the SDK for a rejected registration (engine-ordering mode)."""

    def __init__(self, rejection: Rejection):
        super().__init__(f"{rejection.urn}: " + "; ".join(rejection.reasons))
        self.rejection = rejection


class OrderingError(AssertionError):
    """A registration reached the engine before one of its dependencies was applied."""


# Called for each registration in engine-ordering mode: the reasons to reject it (empty: admit).
AdmitHook = Callable[["RegisteredResource"], list[str]]


@dataclass
class Evaluation:
    project: str
    stack: str
    resources: list[RegisteredResource]  # every registration that reached the engine, in order
    outputs: dict[str, Any]
    logs: list[tuple[str, str]]
    applied: list[str] = field(default_factory=list)  # URNs in the order they were applied (engine-ordering mode)
    rejected: Optional[Rejection] = None  # the registration that stopped the update
    refused: list[str] = field(default_factory=list)  # URNs that arrived after the stop
    reads: list[tuple[str, str, dict]] = field(default_factory=list)  # (type, name, inputs) of each read

    @property
    def stopped(self) -> bool:
        return self.rejected is not None

    def by_type(self, type_: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> RegisteredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"expected one resource named {name!r}, found {len(matches)}")
        return matches[0]

    def find(self, type_: str, name: str) -> Optional[RegisteredResource]:
        for resource in self.resources:
            if resource.type == type_ and resource.name == name:
                return resource
        return None

    def children_of(self, urn: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.parent == urn]


# --------------------------------------------------------------------------- secrets in captured inputs
def _unwrap(value: Any, path: tuple, secret_paths: set) -> Any:
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            secret_paths.add(path)
            return _unwrap(value.get("value"), path, set())
        return {k: _unwrap(v, path + (k,), secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, path + (i,), secret_paths) for i, v in enumerate(value)]
    return value


def _redact(value: Any, secret_paths: frozenset, path: tuple) -> Any:
    if path in secret_paths:
        return SECRET_MARKER
    if isinstance(value, dict):
        return {k: _redact(v, secret_paths, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secret_paths, path + (i,)) for i, v in enumerate(value)]
    return value


# --------------------------------------------------------------------------- mocks
class ProgramMocks(pulumi.runtime.Mocks):
    def __init__(self, stack_reference_outputs: Optional[dict[str, Any]]):
        self.stack_reference_outputs = stack_reference_outputs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == STACK_REFERENCE_TYPE:
            # A never-deployed stack has no outputs at all.
            outputs = dict(self.stack_reference_outputs or {})
            return f"{args.name}-ref", {"name": args.inputs.get("name"), "outputs": outputs, "secretOutputNames": []}
        fake_id = hashlib.sha1(f"{args.typ}::{args.name}".encode()).hexdigest()[:12]
        outputs = dict(args.inputs)
        outputs.setdefault("id", fake_id)
        return fake_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, None


class CapturingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, also recording parent, dependencies and options of each registration."""

    def __init__(self, mocks: ProgramMocks):
        super().__init__(mocks)
        self.captured: list[RegisteredResource] = []
        self.engine_order = False
        self.admit: Optional[AdmitHook] = None
        self.applied: list[str] = []
        self.rejected: Optional[Rejection] = None
        self.refused: list[str] = []
        self.reads: list[tuple[str, str, dict]] = []

    def order_like_the_engine(self, admit: Optional[AdmitHook]) -> None:
        """Switch to engine-ordering mode (see the module docstring)."""
        self.engine_order = True
        self.admit = admit

    def ReadResource(self, request):
        # A read (the self StackReference) is done once the engine answers it.
        response = super().ReadResource(request)
        self.reads.append((request.type, request.name, rpc.deserialize_properties(request.properties)))
        self.applied.append(response.urn)
        return response

    def RegisterResource(self, request):
        if self.engine_order and request.type != "pulumi:pulumi:Stack":
            urn = self.make_urn(request.parent, request.type, request.name)
            if self.rejected is not None:
                # The engine stops the update at the first failed step; later registrations are refused.
                self.refused.append(urn)
                raise RegistrationRejected(self.rejected)
            missing = [d for d in request.dependencies if d not in self.applied]
            if missing:
                raise OrderingError(f"{request.type} {request.name} registered before its dependencies {missing}")
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            secret_paths: set = set()
            raw = rpc.deserialize_properties(request.object, keep_unknowns=True)
            inputs = _unwrap(raw, (), secret_paths)
            self.captured.append(
                RegisteredResource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    parent=request.parent,
                    inputs=inputs,
                    secret_paths=frozenset(secret_paths),
                    dependencies=tuple(request.dependencies),
                    provider=request.provider,
                    options={
                        "protect": request.protect,
                        "deleteBeforeReplace": request.deleteBeforeReplace,
                        "ignoreChanges": list(request.ignoreChanges),
                        "additionalSecretOutputs": list(request.additionalSecretOutputs),
                    },
                )
            )
            if self.engine_order:
                reasons = self.admit(self.captured[-1]) if self.admit else []
                if reasons:
                    self.rejected = Rejection(response.urn, tuple(reasons))
                    raise RegistrationRejected(self.rejected)
                self.applied.append(response.urn)
        return response


class _LogCollector:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _log(self, level: str, msg: str) -> None:
        self.records.append((level, str(msg)))

    def debug(self, msg, *args, **kwargs):
        self._log("debug", msg)

    def info(self, msg, *args, **kwargs):
        self._log("info", msg)

    def warning(self, msg, *args, **kwargs):
        self._log("warning", msg)

    def error(self, msg, *args, **kwargs):
        self._log("error", msg)

    def exception(self, msg, *args, **kwargs):
        self._log("error", msg)


# --------------------------------------------------------------------------- evaluation
def config_for_runtime(values: dict[str, Any], namespace: str = "bazbii") -> dict[str, str]:
    """Config as the CLI passes it to a program: ``ns:key`` -> string (objects as JSON)."""
    import json

    out = {}
    for key, value in values.items():
        full = key if ":" in key else f"{namespace}:{key}"
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


def _evaluate(
    program: Path,
    config: dict[str, str],
    secret_keys: list[str],
    project: str,
    stack: str,
    stack_reference_outputs: Optional[dict[str, Any]],
    preview: bool,
    engine_order: bool = False,
    admit: Optional[AdmitHook] = None,
) -> Evaluation:
    mocks = ProgramMocks(stack_reference_outputs)
    monitor = CapturingMonitor(mocks)
    if engine_order:
        monitor.order_like_the_engine(admit)
    logs = _LogCollector()
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.settings.ROOT.set(None)
    pulumi_mocks.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=monitor,
                           logger=logs, organization="organization")
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    exported: dict[str, Any] = {}

    async def run() -> None:
        runpy.run_path(str(program), run_name="__main__")
        # The mock root stack registered its (empty) outputs up front; read the exports directly.
        root = pulumi.runtime.settings.get_root_resource()
        for name, value in root.outputs.items():
            output = pulumi.Output.from_input(value)
            resolved = await output.future(with_unknowns=True)
            exported[name] = SECRET_MARKER if await output.is_secret() else resolved

    if engine_order:
        _quiet_rejections()
    loop = asyncio.get_event_loop()
    previous_executor = getattr(loop, "_default_executor", None)
    loop.set_default_executor(_INLINE)
    try:
        _sync_await(run_pulumi_func(run))
    except Exception as exc:  # noqa: BLE001 - a rejection surfaces through whichever task awaited it first
        if monitor.rejected is None:
            raise
        # The update stopped at the rejected registration; what is captured is what the engine saw.
        del exc
    finally:
        loop._default_executor = previous_executor  # the loop is the process's: leave it as found
    return Evaluation(project=project, stack=stack, resources=monitor.captured, outputs=exported, logs=logs.records,
                      applied=list(monitor.applied), rejected=monitor.rejected, refused=list(monitor.refused),
                      reads=list(monitor.reads))


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs the SDK's monitor calls (``run_in_executor``) at once, on the event loop's thread. The mock monitor
    answers from memory and never blocks, and handing each registration to a worker thread and back cost more
    than the call itself (the profile of ``--all``: a sixth of its time waiting in ``epoll``)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - what the worker thread would hand back
            future.set_exception(exc)
        return future


_INLINE = _InlineExecutor(max_workers=1)


def _quiet_rejections() -> None:
    """Every task that awaited the rejected check fails with the same rejection, and asyncio logs each
    such future when it is collected ("exception was never retrieved"); the rejection is reported once."""
    loop = asyncio.get_event_loop()
    if getattr(loop, "_bazbii_quiet_rejections", False):
        return
    fallback = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), RegistrationRejected):
            return
        if fallback is not None:
            fallback(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    loop._bazbii_quiet_rejections = True


def evaluate_program(
    config: dict[str, str],
    secret_keys: list[str] = (),
    *,
    project: str = "bazbii",
    stack: str = "prod",
    stack_reference_outputs: Optional[dict[str, Any]] = None,
    preview: bool = True,
    program: Path = PROGRAM,
    engine_order: bool = False,
    admit: Optional[AdmitHook] = None,
) -> Evaluation:
    """Evaluate the program once for ``config`` (full ``ns:key`` strings) in an isolated context.

    ``engine_order``: model the engine's ordering (see the module docstring); ``admit``
    decides on each registration. Raises whatever the program raises (e.g.
    ``SystemExit`` for bad config), except the stop caused by a rejected registration.
    """
    context = contextvars.Context()
    return context.run(
        _evaluate, program, dict(config), list(secret_keys), project, stack, stack_reference_outputs, preview,
        engine_order, admit,
    )

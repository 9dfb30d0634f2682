"""Print transition results like a ``pulumi preview`` with policies, or as JSON."""

from __future__ import annotations

import difflib
import json
from typing import Any, Iterator, Optional, Sequence, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .diff import ResourceChange
from .scenarios import Transition, TransitionResult

T = TypeVar("T", bound=Transition)

OP_SIGNS = {"create": "+", "update": "~", "delete": "-"}
OP_STYLES = {"create": "green", "update": "yellow", "delete": "red"}
MAX_CREATE_PROPS = 6


def _fmt(value: Any) -> str:
    """A value for one line of rich output (escaped: ``[secret]`` is text, not markup)."""
    if value is None:
        return "(none)"
    text = json.dumps(value) if not isinstance(value, str) else value
    if "\n" in text:  # scripts and SQL: a fingerprint, not the whole text (--json has it all)
        text = text.splitlines()[0] + f" ... ({text.count(chr(10)) + 1} lines)"
    return escape(text if len(text) <= 70 else text[:67] + "...")


def _is_multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value


def _line_diffable(before: Any, after: Any) -> bool:
    """A text that has or gets several lines (``None``: it had none): shown as a diff of its lines."""
    return (_is_multiline(before) or _is_multiline(after)) and all(isinstance(v, (str, type(None)))
                                                                    for v in (before, after))


def line_diff(before: str, after: str) -> list[str]:
    """The changed lines of a multi-line value (a script, SQL, a config file), with one line of context around
    each change, as a unified diff without its file headers."""
    return list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1))[2:]


def _print_line_diff(before: str, after: str, console: Console) -> None:
    for line in line_diff(before, after):
        style = {"+": "green", "-": "red", "@": "dim"}.get(line[:1], "")
        text = escape(line)
        console.print(f"        [{style}]{text}[/{style}]" if style else f"        {text}", highlight=False)


class CheckProgress:
    """Each transition announced on stderr as its check starts (``shown``: ``--all``, which takes a while): on a
    terminal a progress bar naming it, elsewhere (logs, CI) one line each, ``check i/n: title``, where ``i``
    counts the checks started (workers may start them out of order)."""

    def __init__(self, total: int, shown: bool, err: Optional[Console] = None) -> None:
        self.total, self.started_count = total, 0
        self.err = (err or Console(stderr=True, highlight=False, soft_wrap=True)) if shown else None
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> "CheckProgress":
        if self.err is not None and self.err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=self.err, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def started(self, title: str) -> None:
        self.started_count += 1
        if self._bar is not None:
            self._bar.update(self._task, description=escape(title), refresh=True)
        elif self.err is not None:
            self.err.print(f"check {self.started_count}/{self.total}: {title}", markup=False)

    def finished(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def each(self, transitions: Sequence[T]) -> Iterator[T]:
        """The transitions, each announced as it is taken to be checked, and counted done when the next is."""
        for transition in transitions:
            self.started(transition.title)
            yield transition
            self.finished()


def _short_type(type_: str) -> str:
    # cloudflare:index/loadBalancerPool:LoadBalancerPool -> cloudflare:LoadBalancerPool
    package, _, rest = type_.partition(":")
    return f"{package}:{rest.rpartition(':')[2]}" if rest else type_


def _step_docs(result: TransitionResult) -> list[tuple[str, str, str, str]]:
    docs = []
    plan = result.transition.after.config.plan
    for move in result.moves:
        step_name = move.after if move.distance >= 0 else move.before
        step = plan.tracks[move.track].steps[plan.tracks[move.track].index(step_name)]
        docs.append((move.track, step.name, step.gate, step.rollback))
    return docs


def print_results(results: list[TransitionResult], console: Console, verbose: bool = False) -> None:
    for result in results:
        transition = result.transition
        console.rule(f"[bold]{transition.title}")
        origin = {
            "base-file": "reconstructed from the base stack file",
            "plan-walk": "the previous step of the plan walk",
            "none": "none (first deployment)",
        }.get(transition.origin, transition.origin)
        console.print(f"applied state judged against: {origin}")
        for note in result.notes:
            console.print(f"[dim]note: {escape(note)}[/dim]")
        for track, name, gate, rollback in _step_docs(result):
            action = "rolls back" if transition.rollback else "applies"
            console.print(f"[bold]{track}[/bold] {action} [bold]{name}[/bold]")
            console.print(f"  gate: {escape(gate)}")
            console.print(f"  rollback: {escape(rollback)}")

        if result.state_changes:
            table = Table(title="desired state changes", show_edge=False, title_justify="left")
            table.add_column("key")
            table.add_column("before")
            table.add_column("after")
            for change in result.state_changes:
                table.add_row(escape(change.path), _fmt(change.before), _fmt(change.after))
            console.print(table)

        counts = {op: sum(1 for c in result.resource_changes if c.op == op) for op in OP_SIGNS}
        console.print(
            f"resources: [green]{counts['create']} to create[/green], [yellow]{counts['update']} to update[/yellow], "
            f"[red]{counts['delete']} to delete[/red]"
        )
        for change in result.resource_changes:
            _print_change(change, console, verbose)

        if transition.expect_denied:
            console.print("this rollback must be refused: the plan declares the step irreversible (reversible: false)")
        if not result.violations:
            console.print("[green]policies: no violations[/green]")
        for violation in result.violations:
            style = "red" if violation.enforcement == "mandatory" else "yellow"
            later = "" if result.reached(violation) else " [dim](an update stops at the check before this resource)[/dim]"
            console.print(
                f"[{style}]{violation.enforcement} {violation.policy_name}[/{style}] "
                f"({_short_type(violation.resource_type)} {violation.resource_name}){later}: {escape(violation.message)}"
            )


def _print_change(change: ResourceChange, console: Console, verbose: bool) -> None:
    sign, style = OP_SIGNS[change.op], OP_STYLES[change.op]
    console.print(f"  [{style}]{sign} {_short_type(change.type)}[/{style}] {change.name}")
    if change.op == "update" or verbose:
        shown = change.changes
    elif change.op == "create":
        # A created resource's unset inputs are no news: only what it is created with.
        shown = [prop for prop in change.changes if prop.after is not None][:MAX_CREATE_PROPS]
    else:
        shown = []
    for prop in shown:
        if change.op == "update" and _line_diffable(prop.before, prop.after):
            # A change inside a script or a generated file is what a reviewer needs: its lines, not its first one.
            # Secrets never reach here: a secret value is shown as [secret], one line.
            lines = (prop.after or "").count(chr(10)) + 1 if prop.after is not None else 0
            console.print(f"      {escape(prop.path)}: {lines} lines, changed:")
            _print_line_diff(prop.before or "", prop.after or "", console)
        elif change.op == "update":
            console.print(f"      {escape(prop.path)}: {_fmt(prop.before)} -> {_fmt(prop.after)}")
        else:
            console.print(f"      {escape(prop.path)}: {_fmt(prop.after if change.op == 'create' else prop.before)}")
    hidden = len([prop for prop in change.changes if prop.after is not None]) - len(shown)
    if hidden > 0 and change.op == "create":
        console.print(f"      ... {hidden} more (--verbose)")


def as_json(results: list[TransitionResult]) -> list[dict[str, Any]]:
    out = []
    for result in results:
        transition = result.transition
        out.append(
            {
                "title": transition.title,
                "rollback": transition.rollback,
                "appliedStateOrigin": transition.origin,
                "before": transition.before.config.current if transition.before else None,
                "after": transition.after.config.current,
                "moves": [m.__dict__ for m in result.moves],
                "stateChanges": [c.__dict__ for c in result.state_changes],
                "resourceChanges": [
                    {"op": c.op, "type": c.type, "name": c.name, "urn": c.urn,
                     "changes": [p.__dict__ for p in c.changes]}
                    for c in result.resource_changes
                ],
                "expectDenied": transition.expect_denied,
                "failed": result.failed,
                "violations": [dict(v.__dict__, reachedByEngine=result.reached(v)) for v in result.violations],
                "notes": result.notes,
            }
        )
    return out


def summary_table(results: list[TransitionResult]) -> Table:
    table = Table(title="plan check", show_edge=False, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("transition")
    table.add_column("create/update/delete")
    table.add_column("mandatory violations", justify="right")
    table.add_column("verdict")
    for index, result in enumerate(results):
        counts = "/".join(str(sum(1 for c in result.resource_changes if c.op == op)) for op in OP_SIGNS)
        bad = len(result.mandatory)
        if result.transition.expect_denied:
            verdict = "[green]refused, as declared (irreversible step)[/green]" if bad else "[red]ALLOWED but the step is irreversible[/red]"
        else:
            verdict = "[red]denied[/red]" if bad else "[green]ok[/green]"
        table.add_row(str(index), escape(result.transition.title), counts, str(bad), verdict)
    return table

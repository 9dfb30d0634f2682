"""Triggers the old application's writes go through.

* A trigger function (``RETURNS trigger``, PL/pgSQL) that may reject a write (``RAISE`` at ERROR
  level, ``ASSERT``, or ``RETURN NULL``, which a BEFORE ROW trigger turns into a silently skipped
  row), created or replaced outside contract: the old version's writes may fail
  (``rejects-old-writes``). ``CREATE OR REPLACE`` counts even before a trigger uses it: an existing
  trigger may. A shadow run knows which triggers on existing tables run it (``pg_trigger``).
* ``CREATE TRIGGER`` on an existing table running a function the analysis has not read (nor one of
  PostgreSQL's own trigger functions), or a trigger function in another language: ``needs-shadow-run``.
* ``DISABLE TRIGGER ALL`` also disables the internal triggers that enforce foreign keys: refused in
  every stage (``disable-trigger-all``).
"""

from __future__ import annotations

from pglast import ast
from pglast.parser import ParseError

from .doblocks import parse_body, rejection
from .facts import Context
from .findings import ERROR
from .parsing import Statement, def_option, names, present, shown

TRIGGER_TYPE_BEFORE = 2  # pg_trigger.tgtype / CreateTrigStmt.timing bit (trigger.h)
# PostgreSQL's own trigger functions: they never reject a write the table's constraints accept.
BUILTIN_TRIGGER_FUNCTIONS = frozenset({"suppress_redundant_updates_trigger", "tsvector_update_trigger",
                                       "tsvector_update_trigger_column"})


def function_rejection(language: str, body: str | None) -> tuple[str | None, str | None]:
    """How a trigger function may reject a write: ``(always, as a BEFORE ROW trigger)``, None where it never does
    (read from its PL/pgSQL body; ``RETURN NULL`` only skips the row in a BEFORE ROW trigger)."""
    if language != "plpgsql":
        unknown = f"it is written in {language}, which the analysis cannot read"
        return unknown, unknown
    if body is None:
        return "its body cannot be read", "its body cannot be read"
    try:
        tree = parse_body(body, "trigger")
    except ParseError as exc:
        broken = f"its body does not parse ({exc.args[0] if exc.args else exc})"
        return broken, broken
    return rejection(tree, before_row=False), rejection(tree, before_row=True)


def rejects_old_writes(ctx: Context, stmt: Statement, what: str, how: str) -> None:
    if ctx.stage != "contract":
        ctx.add(stmt, "rejects-old-writes", ERROR,
                f"{what} may reject a write of the old application version, which still runs in {ctx.stage}: {how}",
                "keep triggers that old versions' writes pass through permissive (fill or copy values, never raise) "
                "until contract; enforce new rules there (or with a CHECK ... NOT VALID on new columns)")


def check_create_function(ctx: Context, stmt: Statement, node: ast.CreateFunctionStmt) -> None:
    returns = [n.lower() for n in names(node.returnType.names)] if node.returnType else []
    if returns[-1:] != ["trigger"]:
        return
    name = ".".join(names(node.funcname))
    language = def_option(node.options, "language")
    lang = getattr(language.arg, "sval", "?").lower() if language is not None else "sql"
    body_opt = def_option(node.options, "as")
    body = names(body_opt.arg)[0] if body_opt is not None and names(body_opt.arg) else None
    replaced = node.replace and name in ctx.facts.trigger_functions  # the SQL seen so far created it: triggers may run it
    always, before_row = ctx.facts.trigger_functions[name] = function_rejection(lang, body)
    rejects = always or before_row
    if replaced and rejects:
        rejects_old_writes(ctx, stmt, f"CREATE OR REPLACE FUNCTION {name}() (a trigger function an existing trigger "
                                      "may run)", rejects)


def check_create_trigger(ctx: Context, stmt: Statement, node: ast.CreateTrigStmt) -> None:
    table = ctx.key(node.relation)
    function = ".".join(names(node.funcname))
    if table in ctx.new_tables or function.split(".")[-1] in BUILTIN_TRIGGER_FUNCTIONS:
        return
    what = f"trigger {node.trigname} on {shown(node.relation)} running {function}()"
    if function not in ctx.facts.trigger_functions:
        ctx.needs_shadow_run(stmt, f"{what}: a function the analysis has not read")
    else:
        always, before_row = ctx.facts.trigger_functions[function]
        how = always or (before_row if node.row and present(node.timing, "trigger timing") & TRIGGER_TYPE_BEFORE else None)
        if how:
            rejects_old_writes(ctx, stmt, what, how)


def check_disable_trigger_all(ctx, stmt, table, name, cmd) -> None:
    ctx.add(stmt, "disable-trigger-all", ERROR,
            f"ALTER TABLE {name} DISABLE TRIGGER ALL also disables the internal triggers that enforce its foreign "
            "keys: rows that break them go in unchecked while it is off",
            "disable the user triggers by name (or DISABLE TRIGGER USER) in contract, never ALL")

"""Migration directories: loading, validation, checksums and the per-stage execution plan.

A migration is a directory ``migrations/<id>/`` holding::

    migration.toml      metadata (see docs/schema-migrations.md)
    expand.sql          additive DDL, safe while old and new application versions run
    migrate.sql         optional, runs at the start of the migrate stage (e.g. SET DEFAULT)
    migrate_after.sql   optional, runs after the backfills (e.g. VALIDATE CONSTRAINT)
    contract.sql        destructive DDL, allowed only once every app runs >= contract_min_app_version

The migrate stage runs ``migrate.sql``, then every ``[[backfill]]`` in order, then
``migrate_after.sql``. A ``[dual_write]`` table installs its trigger at the end of expand and
drops it at the start of contract (:mod:`bazbii_db.migrations.stageplan` orders the units).
A stage may have a down step, ``<stage>.down.sql`` (e.g. ``contract.down.sql``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pglast import ast, parse_sql
from pglast.parser import ParseError

from bazbii_db.migrations.errors import MigrationError
from bazbii_db.migrations.throttle import LatencyBudget, LatencyConfigError
from bazbii_db.migrations.versions import parse_version
from bazbii_db.sql_safety import ERROR, STAGES, Finding, split_statements
from bazbii_plan.facts import DOWN_SUFFIX, STAGE_FILES

METADATA_FILE = "migration.toml"


class MigrationSpecError(MigrationError):
    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        where = f"{file}:{line or 1}: " if file else ""
        super().__init__(where + message)


def default_migrations_dir() -> Path:
    """``$BAZBII_MIGRATIONS_DIR`` or the repository's ``migrations/`` directory."""
    override = os.environ.get("BAZBII_MIGRATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "migrations"


def _qualified(name: str, what: str, file: str) -> tuple[str | None, str]:
    parts = name.split(".")
    if len(parts) > 2 or not all(parts):
        raise MigrationSpecError(f"{what} {name!r} must be 'table' or 'schema.table'", file)
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _check_expression(expr: str, what: str, file: str, *, predicate: bool = False) -> None:
    """An expression must parse as exactly one SQL expression (no statement smuggling)."""
    text = f"SELECT 1 WHERE ({expr})" if predicate else f"SELECT ({expr})"
    try:
        stmts = parse_sql(text)
    except ParseError as exc:
        raise MigrationSpecError(f"{what}: not a valid SQL expression: {exc.args[0]}", file) from None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        raise MigrationSpecError(f"{what}: must be a single SQL expression", file)


def _latency_budget(data: dict, name: str, file: str) -> LatencyBudget | None:
    if data.get("latency") in (None, False):
        return None
    if data.get("target_batch_ms"):
        raise MigrationSpecError(f"backfill {name}: target_batch_ms and latency both adapt the batch size; drop "
                                 "target_batch_ms (latency.chunk_ms sizes each batch)", file)
    try:
        return LatencyBudget.from_mapping(data["latency"], f"backfill {name}: latency")
    except LatencyConfigError as exc:
        raise MigrationSpecError(str(exc), file) from None


@dataclass(frozen=True)
class BackfillSpec:
    """One batched data change, applied in primary-key ranges ``key > lo AND key <= hi``.

    kind="update": ``UPDATE table SET col = expr, ... WHERE <range> AND (where)``
    kind="copy":   ``INSERT INTO target (cols) SELECT exprs FROM table WHERE <range> AND (where)
                   ON CONFLICT (conflict) DO NOTHING``
    """

    name: str
    kind: str
    table: str
    key: str = "id"
    set: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    conflict: tuple[str, ...] = ()
    where: str | None = None
    batch_size: int = 1000
    pause_ms: int = 0
    target_batch_ms: int | None = None
    latency: LatencyBudget | None = None  # the latency-aware throttle (bazbii_db.migrations.throttle)

    def fingerprint(self) -> dict:
        data = asdict(self)
        # batch tuning does not change which rows are touched or how: tuning it is not a "changed file"
        for tuning in ("batch_size", "pause_ms", "target_batch_ms", "latency"):
            data.pop(tuning)
        data["conflict"] = list(self.conflict)
        return data

    @classmethod
    def from_toml(cls, data: dict, file: str) -> "BackfillSpec":
        known = {"name", "kind", "table", "key", "set", "target", "columns", "conflict", "where", "batch_size",
                 "pause_ms", "target_batch_ms", "latency"}
        unknown = set(data) - known
        if unknown:
            raise MigrationSpecError(f"[[backfill]]: unknown keys {sorted(unknown)}", file)
        kind = data.get("kind", "update")
        name = data.get("name")
        if not name or not isinstance(name, str):
            raise MigrationSpecError("[[backfill]] needs a name", file)
        if "table" not in data:
            raise MigrationSpecError(f"backfill {name}: 'table' is required", file)
        _qualified(data["table"], f"backfill {name}: table", file)
        spec = cls(
            name=name, kind=kind, table=data["table"], key=data.get("key", "id"),
            set=dict(data.get("set", {})), target=data.get("target"), columns=dict(data.get("columns", {})),
            conflict=tuple(data.get("conflict", ())), where=data.get("where"),
            batch_size=int(data.get("batch_size", 1000)), pause_ms=int(data.get("pause_ms", 0)),
            target_batch_ms=data.get("target_batch_ms"),
            latency=_latency_budget(data, name, file),
        )
        if kind == "update":
            if not spec.set:
                raise MigrationSpecError(f"backfill {name}: kind='update' needs set = {{column = expr}}", file)
            for col, expr in spec.set.items():
                _check_expression(expr, f"backfill {name}: set.{col}", file)
        elif kind == "copy":
            if not spec.target or not spec.columns:
                raise MigrationSpecError(f"backfill {name}: kind='copy' needs target and columns", file)
            _qualified(spec.target, f"backfill {name}: target", file)
            for col, expr in spec.columns.items():
                _check_expression(expr, f"backfill {name}: columns.{col}", file)
        else:
            raise MigrationSpecError(f"backfill {name}: kind must be 'update' or 'copy', not {kind!r}", file)
        if spec.where is not None:
            _check_expression(spec.where, f"backfill {name}: where", file, predicate=True)
        if spec.batch_size < 1 or spec.pause_ms < 0:
            raise MigrationSpecError(f"backfill {name}: batch_size must be >= 1 and pause_ms >= 0", file)
        return spec


@dataclass(frozen=True)
class DualWriteSpec:
    """A BEFORE INSERT OR UPDATE trigger keeping ``old_column`` and ``new_column`` in step.

    ``forward`` computes the new column from ``NEW.<old_column>``; ``backward`` the reverse.
    Both default to a plain copy (a rename).
    """

    table: str
    old_column: str
    new_column: str
    forward: str | None = None
    backward: str | None = None

    @classmethod
    def from_toml(cls, data: dict, file: str) -> "DualWriteSpec":
        for key in ("table", "old_column", "new_column"):
            if not data.get(key):
                raise MigrationSpecError(f"[dual_write]: '{key}' is required", file)
        unknown = set(data) - {"table", "old_column", "new_column", "forward", "backward"}
        if unknown:
            raise MigrationSpecError(f"[dual_write]: unknown keys {sorted(unknown)}", file)
        spec = cls(**data)
        _qualified(spec.table, "[dual_write] table", file)
        for name in ("forward", "backward"):
            expr = getattr(spec, name)
            if expr is not None:
                _check_expression(expr, f"[dual_write] {name}", file)
        return spec


def _has_statements(path: Path) -> bool:
    """A file that does not parse counts as having content (its analysis reports the syntax error)."""
    try:
        return bool(split_statements(path.read_text()))
    except ParseError:
        return True


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    id: str
    path: Path
    description: str = ""
    contract_min_app_version: str | None = None
    backfills: tuple[BackfillSpec, ...] = ()
    dual_write: DualWriteSpec | None = None

    def sql_files(self, stage: str) -> list[Path]:
        return [self.path / name for name in STAGE_FILES[stage] if (self.path / name).exists()]

    def down_file(self, stage: str) -> Path | None:
        """``<stage>.down.sql`` when the stage has a down step, else None (the stage is irreversible)."""
        path = self.path / f"{stage}{DOWN_SUFFIX}"
        return path if path.exists() else None

    def has_content(self, stage: str) -> bool:
        if any(_has_statements(p) for p in self.sql_files(stage)):
            return True
        if stage == "migrate":
            return bool(self.backfills)
        return self.dual_write is not None

    def checksum(self, stage: str) -> str:
        """Checksum of everything that defines what ``stage`` does."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        doc: dict = {"stage": stage, "sql": {p.name: p.read_text() for p in self.sql_files(stage)}}
        if stage == "migrate":
            doc["backfills"] = [b.fingerprint() for b in self.backfills]
        if stage in ("expand", "contract") and self.dual_write is not None:
            doc["dual_write"] = asdict(self.dual_write)
        if stage == "contract":
            doc["contract_min_app_version"] = self.contract_min_app_version
        return sha256_text(json.dumps(doc, sort_keys=True))

    def metadata_findings(self, stage: str) -> list[Finding]:
        """Metadata rules that are about a stage rather than one SQL statement."""
        meta = str(self.path / METADATA_FILE)
        out = []
        if stage == "contract" and self.has_content("contract") and not self.contract_min_app_version:
            out.append(Finding("contract-needs-min-app-version",
                               "the migration has a contract stage but migration.toml declares no "
                               "contract_min_app_version, so the runner cannot tell when it is safe",
                               meta, 1, ERROR, 'add contract_min_app_version = "X.Y.Z"'))
        return out


def load_migration(path: str | os.PathLike) -> Migration:
    path = Path(path)
    meta = path / METADATA_FILE
    if not path.is_dir():
        raise MigrationSpecError(f"migration directory {path} does not exist", str(path))
    if not meta.exists():
        raise MigrationSpecError(f"{METADATA_FILE} is missing", str(meta))
    try:
        data = tomllib.loads(meta.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MigrationSpecError(f"invalid TOML: {exc}", str(meta)) from None
    unknown = set(data) - {"id", "description", "contract_min_app_version", "backfill", "dual_write"}
    if unknown:
        raise MigrationSpecError(f"unknown keys {sorted(unknown)}", str(meta))
    mig_id = data.get("id", path.name)
    if mig_id != path.name:
        raise MigrationSpecError(f"id {mig_id!r} does not match the directory name {path.name!r}", str(meta))
    min_version = data.get("contract_min_app_version")
    if min_version is not None:
        if parse_version(str(min_version)) is None:
            raise MigrationSpecError(f"contract_min_app_version {min_version!r} is not a version", str(meta))
    backfills = tuple(BackfillSpec.from_toml(b, str(meta)) for b in data.get("backfill", []))
    names = [b.name for b in backfills]
    if len(set(names)) != len(names):
        raise MigrationSpecError("backfill names must be unique", str(meta))
    dual = DualWriteSpec.from_toml(data["dual_write"], str(meta)) if "dual_write" in data else None
    return Migration(id=mig_id, path=path, description=data.get("description", ""),
                     contract_min_app_version=str(min_version) if min_version is not None else None,
                     backfills=backfills, dual_write=dual)


def list_migrations(migrations_dir: str | os.PathLike | None = None) -> list[str]:
    root = Path(migrations_dir) if migrations_dir else default_migrations_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / METADATA_FILE).exists())


def migration_checksum(migrations_dir: str | os.PathLike | None, migration_id: str, stage: str) -> str:
    """Checksum of one stage of one migration, for the Pulumi program to pass at preview time."""
    root = Path(migrations_dir) if migrations_dir else default_migrations_dir()
    return load_migration(root / migration_id).checksum(stage)


def read_migration_sql(migrations_dir: str | os.PathLike | None, migration_id: str, stage: str) -> str:
    """The SQL text of one stage (its files concatenated, with file-name comments)."""
    root = Path(migrations_dir) if migrations_dir else default_migrations_dir()
    migration = load_migration(root / migration_id)
    parts = [f"-- {p.name}\n{p.read_text()}" for p in migration.sql_files(stage)]
    return "\n".join(parts)

"""What the analysis reports: findings, their severities, and the error the runner raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from bazbii_plan.facts import MIGRATION_STAGES

STAGES = MIGRATION_STAGES
ERROR = "error"
WARNING = "warning"
# Refused offline because only PostgreSQL can tell; a shadow run (:mod:`.shadow`) judges it.
NEEDS_SHADOW_RUN = "needs-shadow-run"
# Rules whose offline verdict may be a refusal only for want of a catalog (function volatility, a
# column's current type, what a type is): a caller with a connection asks again with one before refusing.
CATALOG_DEPENDENT_RULES = frozenset({"adding-field-with-volatile-default", "changing-column-type",
                                     "adding-column-of-checked-domain", "data-change-in-function"})


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    file: str
    line: int  # 1-based
    severity: str  # "error" | "warning"
    fix: str

    def format(self) -> str:
        text = f"{self.file}:{self.line}: {self.severity}[{self.rule}]: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class SqlSafetyError(Exception):
    """Raised by callers (the runner) when analysis found errors; nothing has run."""

    def __init__(self, findings: list[Finding], judged_by: str = ""):
        self.findings = [f for f in findings if f.severity == ERROR]
        self.judged_by = judged_by
        lines = [f.format() for f in self.findings] + ([f"judged by: {judged_by}"] if judged_by else [])
        super().__init__("unsafe migration SQL, nothing was run:\n" + "\n".join(lines))


def format_findings(findings: Iterable[Finding]) -> str:
    return "\n".join(f.format() for f in findings)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")

"""Every operator CLI follows the convention of bazbii_plan/cli.py: ``--json`` on the command and on every
subcommand, and every option has help text; a duration's help names its unit."""

from __future__ import annotations

import argparse
import re

import pytest

from bazbii_analysis.watch import _parser as watch_parser
from bazbii_db.migrations.__main__ import build_parser as migrations_parser
from bazbii_db.replication.__main__ import build_parser as replication_parser
from offline_preview.__main__ import _parser as preview_parser
from rehearsal.__main__ import build_parser as rehearsal_parser

CLIS = {"./preview": preview_parser, "migrations": migrations_parser, "replication": replication_parser,
        "./watch": watch_parser, "./rehearse": rehearsal_parser}
# An option whose name says it is a length of time, and what its help must say about the unit.
DURATION = re.compile(r"timeout|wait|interval|window|duration|soak|baseline|-age$|-s$|-ms$|seconds")
UNIT = re.compile(r"\b(seconds?|ms|milliseconds?|minutes?|hours?)\b|\be\.g\. [\d.]+[smhd]\b|\d+[smh]\b|ISO time")


def parsers(name: str, parser: argparse.ArgumentParser):
    """The parser and each of its subcommands' (aliases once), as (where, parser)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for sub_name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from parsers(f"{name} {sub_name}", sub)


def options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


ALL = [(where, p) for name, build in CLIS.items() for where, p in parsers(name, build())]


@pytest.mark.parametrize("where,parser", ALL, ids=[w for w, _ in ALL])
def test_every_option_has_help_and_a_duration_names_its_unit(where, parser):
    missing = [a.option_strings[-1] for a in options(parser) if not (a.help or "").strip()]
    assert not missing, f"{where}: options without help: {missing}"
    durations = [a for a in options(parser) if DURATION.search(a.option_strings[-1]) and a.nargs != 0]
    unitless = [a.option_strings[-1] for a in durations if not UNIT.search(f"{a.help} {a.metavar or ''}")]
    assert not unitless, f"{where}: durations whose help names no unit: {unitless}"


@pytest.mark.parametrize("where,parser", ALL, ids=[w for w, _ in ALL])
def test_every_command_and_subcommand_takes_json(where, parser):
    if where == "./rehearse":
        pytest.skip("the rehearsal is not an operator CLI of the convention; it has its own --json")
    assert any("--json" in a.option_strings for a in options(parser)), where


@pytest.mark.parametrize("argv", [["--json", "analyse"], ["analyse", "--json"], ["--json", "lint", "--json"]])
def test_json_before_or_after_the_subcommand(argv):
    assert migrations_parser().parse_args(argv).json is True


def test_no_json_is_text():
    assert migrations_parser().parse_args(["analyse"]).json is False
    assert replication_parser().parse_args(["drop-slot", "--slot", "s"]).json is False
    assert replication_parser().parse_args(["drop-slot", "--slot", "s", "--json"]).json is True

"""The operator CLIs' convention, kept where the data-plane CLIs have always imported it from.

It lives in :mod:`bazbii_plan.cli` (imported by every package's CLI without a cycle); this re-exports it.
"""

from bazbii_plan.cli import (EXIT_FAILED, EXIT_OK, EXIT_PIPE_CLOSED, EXIT_STOPPED_BASE, EXIT_USAGE, JSON_HELP,
                             CliParser, emit, exit_code_stopped, fail, non_negative_seconds, one_line,
                             positive_seconds, run_guarded, run_main)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PIPE_CLOSED", "EXIT_STOPPED_BASE", "EXIT_USAGE", "JSON_HELP", "CliParser",
           "emit", "exit_code_stopped", "fail", "non_negative_seconds", "one_line", "positive_seconds", "run_guarded",
           "run_main"]

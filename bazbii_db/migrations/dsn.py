"""Re-export of :mod:`bazbii_db.dsn` (the one DSN helper) for the runner's modules."""

from bazbii_db.dsn import (REDACTED, DsnError, describe, dsn_from_env, dsn_from_file, passwords_in,  # noqa: F401
                           read_dsn, redact, with_params)

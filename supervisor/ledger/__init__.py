"""The run's durable record (SQLite in state_dir): storage only."""

from supervisor.ledger.database import (
    DAMAGED_SUFFIX,
    HISTORY,
    LEDGER_FILE,
    SCHEMA_VERSION,
    AttemptRow,
    EventRow,
    Ledger,
    LedgerDamaged,
    LedgerError,
    RunRow,
    VerdictRow,
)

__all__ = [
    "DAMAGED_SUFFIX",
    "HISTORY",
    "LEDGER_FILE",
    "SCHEMA_VERSION",
    "AttemptRow",
    "EventRow",
    "Ledger",
    "LedgerDamaged",
    "LedgerError",
    "RunRow",
    "VerdictRow",
]

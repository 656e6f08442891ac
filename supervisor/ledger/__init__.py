"""The run's durable record (SQLite in state_dir, WAL, synchronous=FULL): storage only."""

from supervisor.ledger.database import LEDGER_FILE, Ledger
from supervisor.ledger.opening import DAMAGED_SUFFIX, HISTORY, LedgerDamaged, LedgerError
from supervisor.ledger.rows import AttemptRow, EventRow, RunRow, VerdictRow
from supervisor.ledger.schema import SCHEMA_VERSION

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

"""Checkpoint files: versions, watching, verdicts, plans, moves."""

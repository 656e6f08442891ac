"""The trainer as OS processes."""

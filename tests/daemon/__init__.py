"""The daemon's wiring and chores."""

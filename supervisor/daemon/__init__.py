"""The daemon: wiring events in and actions out around the core."""

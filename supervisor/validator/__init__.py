"""Checkpoint validation in a worker process of its own (only the worker imports torch)."""

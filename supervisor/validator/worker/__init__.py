"""The validator worker: the one place that imports torch."""

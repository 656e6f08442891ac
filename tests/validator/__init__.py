"""The validator worker and its client."""

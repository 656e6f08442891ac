"""End to end through the real CLI (marked slow)."""

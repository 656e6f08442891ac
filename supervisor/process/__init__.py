"""The trainer as OS processes: launch, output, /proc, GPU release, the run lock."""

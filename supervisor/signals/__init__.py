"""What the trainer shows (output lines, heartbeats, TensorBoard, OOM evidence), read as facts for the core."""

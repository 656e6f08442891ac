"""What the trainer shows, read into facts."""

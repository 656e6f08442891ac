"""The pure decision core, replayed on a fake clock."""

"""Logs, webhooks, systemd, status socket, Prometheus."""

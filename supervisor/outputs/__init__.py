"""What leaves the supervisor for people and services: logs, webhooks, systemd, status socket, Prometheus."""

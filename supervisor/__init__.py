"""train-supervisor: keeps a GPU training run going unattended."""

__version__ = "0.1.0"

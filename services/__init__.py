"""The reenact services: one package per process (python -m services.<name>)."""

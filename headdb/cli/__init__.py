"""The `headdb` command: a thin typer layer over the Python API."""

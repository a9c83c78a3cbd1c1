"""The ``edge-ad`` command: typer shells over library functions (``main.py`` holds the app and its entry point)."""

"""The one place avsc's version is written; ``pyproject.toml`` and the image tags read it."""

__version__ = "0.1.0"

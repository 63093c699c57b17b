"""facegan's version (one place: pyproject reads it, --version prints it)."""

__version__ = "0.2.0"

"""anyseg: segment anything in images and videos."""

__version__ = "0.1.0"

"""Command line interface (``nnshrink``)."""

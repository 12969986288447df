"""signoff: the governed path between AI agents and production."""

__version__ = "0.1.0"

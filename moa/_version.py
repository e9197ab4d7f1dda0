"""moa's version, in a module of its own so that any module may read it without importing moa."""

__version__ = "0.2.0.dev0"

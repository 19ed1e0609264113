"""The package version, in a module of its own so every floor can read it without
importing the package's face (which re-exports the higher floors' API)."""

__version__ = "0.1.0"

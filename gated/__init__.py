"""gated: port gate automation and sensor integration daemon."""

__version__ = "0.1.0"

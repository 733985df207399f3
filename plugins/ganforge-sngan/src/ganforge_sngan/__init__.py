"""SNGAN ResNet models and instance noise for ganforge (example third-party plugin)."""

__version__ = "0.2.0"

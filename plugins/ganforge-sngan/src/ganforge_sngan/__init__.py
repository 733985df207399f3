"""SNGAN ResNet models and DiffAugment for ganforge (example third-party plugin)."""

__version__ = "0.2.0"

"""Datasets: bundled MNIST and digits, user-provided MNIST/CIFAR-10/WAV folders, .npz arrays."""
from arspec.data.registry import DataError, Splits, load_data

__all__ = ["DataError", "Splits", "load_data"]

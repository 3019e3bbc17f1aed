"""Datasets: bundled MNIST, digits and speech; user .npz files and .npy folders with context
arrays; text, CIFAR-10 and WAV folders."""
from arspec.data.registry import load_data
from arspec.data.splits import DataError, Splits

__all__ = ["DataError", "Splits", "load_data"]

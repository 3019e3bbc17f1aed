"""Training: the loop, its options and distributed (torchrun) support."""
from arspec.train.trainer import TrainConfig, TrainingError, evaluate_nll, train

__all__ = ["TrainConfig", "TrainingError", "evaluate_nll", "train"]

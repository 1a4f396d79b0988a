"""The one training engine every family shares."""
from diffflow_core.training.trainer import History, Trainer

__all__ = ["Trainer", "History"]

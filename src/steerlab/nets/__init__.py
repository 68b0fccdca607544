"""Network building blocks."""

from steerlab.nets.mlp import MLPResNet

__all__ = ["MLPResNet"]

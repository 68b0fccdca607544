"""Network building blocks."""

from steerlab.nets.mlp import MLPPlain, MLPResNet

__all__ = ["MLPPlain", "MLPResNet"]

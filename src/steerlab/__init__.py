"""steerlab: train generative robot policies and steer them at inference time by optimization."""

__version__ = "0.1.0"

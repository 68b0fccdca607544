"""Steering by optimization: objectives, noise optimization and its zero-order baselines."""

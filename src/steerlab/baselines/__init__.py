"""Explicit baselines trained and evaluated like every other policy."""

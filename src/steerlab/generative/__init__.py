"""Generative (diffusion and flow-matching) policies."""

"""Rollouts, metrics and plots."""

"""Adapters that build steerlab chains from other libraries' objects (imported lazily: steerlab does not need
them installed). :mod:`steerlab.adapters.diffusers`: a chain from a diffusers scheduler and a model callable."""

"""Implementations of ``steerlab`` sub-commands: argument dataclasses (read by tyro), argument parsing and checks,
run loading and output writing. The algorithms they call live in :mod:`steerlab.nav`, :mod:`steerlab.steer`, etc."""

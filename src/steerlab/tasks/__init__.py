"""Tasks: what a run trains on and is evaluated on, selected by name (``TrainConfig.env``, ``steerlab collect
<task>``) through a registry.

Every task implements :class:`~steerlab.tasks.base.Task` (its sizes, environment, demonstrations, training windows,
evaluation, run-directory name, report lines and plots, and its ``steerlab collect`` options); nothing outside
this package branches on a task's name. The built-in tasks:

* ``particle`` (:mod:`steerlab.tasks.particle`): IBC's N-D particle, ``steerlab/Particle-v0``;
* ``nav2d`` (:mod:`steerlab.tasks.nav2d`): the nav policy on ``steerlab/Nav2D-v0``;
* ``particle-wm`` (:mod:`steerlab.tasks.particle_wm`): a world model of future particle positions, dataset only;
* ``metaworld/<task>`` (:mod:`steerlab.tasks.metaworld`): one MetaWorld task from state, e.g.
  ``metaworld/push-v3``, built from the family task ``metaworld`` (which also collects: ``steerlab collect
  metaworld --task push-v3``).

Adding a task is one module implementing :class:`~steerlab.tasks.base.Task` (or configuring an existing class,
e.g. ``ParticleTask(name, env_id, env_kwargs)``) plus one ``register_task`` line below; code outside the package
can also call :func:`register_task` (as the tests do).
"""

from __future__ import annotations

import gymnasium as gym

from steerlab.tasks.base import Task, TaskDims
from steerlab.tasks.metaworld import MetaWorldTask
from steerlab.tasks.nav2d import Nav2DTask
from steerlab.tasks.particle import ParticleTask
from steerlab.tasks.particle_wm import ParticleWorldModelTask
from steerlab.tasks.registry import get_task, register_task, task_names, unregister_task

register_task("particle", ParticleTask("particle"))
register_task("nav2d", Nav2DTask("nav2d"))
register_task("particle-wm", ParticleWorldModelTask("particle-wm"))
register_task("metaworld", MetaWorldTask("metaworld"))  # runs name env="metaworld/<task>"


def make_env(name: str, n_dim: int = 2) -> gym.Env:
    """A fresh environment of task ``name`` (``get_task(name).make_env(n_dim)``)."""
    return get_task(name).make_env(n_dim)


def dims(name: str, n_dim: int = 2) -> TaskDims:
    """``(obs_dim, act_dim, action_low, action_high)`` of task ``name``."""
    return get_task(name).dims(n_dim)


__all__ = ["MetaWorldTask", "Nav2DTask", "ParticleTask", "ParticleWorldModelTask", "Task", "TaskDims", "dims", "get_task",
           "make_env", "register_task", "task_names", "unregister_task"]

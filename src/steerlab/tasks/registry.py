"""The registry of tasks by name (the built-in ones are registered by :mod:`steerlab.tasks`).

A registered task may stand for a family of tasks named ``<family>/<variant>`` (e.g. ``metaworld/push-v3``):
:func:`get_task` builds such a name's task with ``get_task(family).variant(variant)`` the first time it is asked
for and registers it under the full name."""

from __future__ import annotations

from steerlab.tasks.base import Task

_TASKS: dict[str, Task] = {}


def register_task(name: str, task: Task, overwrite: bool = False) -> Task:
    """Make ``task`` the task runs select with ``env=name``; a name already taken is an error unless
    ``overwrite``."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task({name!r}, ...) needs a steerlab.tasks.base.Task, got {type(task).__name__}")
    if name in _TASKS and not overwrite:
        raise ValueError(f"task {name!r} is already registered ({type(_TASKS[name]).__name__}); pick another name "
                         "or pass overwrite=True")
    if getattr(task, "name", name) != name:
        raise ValueError(f"task registered as {name!r} calls itself {task.name!r}; the two must agree")
    task.name = name
    _TASKS[name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove task ``name`` (e.g. one a test registered)."""
    _TASKS.pop(name, None)


def task_names() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> Task:
    """The task registered as ``name``, or for ``<family>/<variant>`` the variant of registered task ``family``
    (:meth:`~steerlab.tasks.base.Task.variant`, registered under ``name`` once built); a ValueError listing the
    known tasks otherwise."""
    if name in _TASKS:
        return _TASKS[name]
    family, sep, variant = name.partition("/")
    if sep and family in _TASKS and variant:
        return register_task(name, _TASKS[family].variant(variant))
    raise ValueError(f"unknown task (env) {name!r}; known tasks: {', '.join(_TASKS)}. A new task is a module "
                     "implementing steerlab.tasks.base.Task plus a register_task line in steerlab/tasks/__init__.py")

"""The policy registry: every policy kind, its policy class and its config class.

A policy module registers its class with the config that describes it::

    @register_policy("my-policy", MyConfig)
    class MyPolicy(Policy):
        def __init__(self, cfg: MyConfig, obs_dim: int, act_dim: int): ...

where ``MyConfig`` is a frozen dataclass whose first field is ``kind: Literal["my-policy"] = "my-policy"`` (the key
that ``config.json`` files are read back by). The built-in policies are the modules of
:data:`BUILTIN_POLICY_MODULES`; they, and the modules that installed packages declare under the
``steerlab.policies`` entry-point group, are imported on the first lookup, so importing this module stays light.
Adding a built-in policy is one new module plus one line in :data:`BUILTIN_POLICY_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

#: modules that register the built-in policies when imported
BUILTIN_POLICY_MODULES = (
    "steerlab.ebm.policy",
    "steerlab.generative.policy",
    "steerlab.steer.critic_policy",
    "steerlab.baselines.mse",
    "steerlab.baselines.nearest",
    "steerlab.nav.policy",
)
#: entry-point group through which an installed package adds its policy modules
ENTRY_POINT_GROUP = "steerlab.policies"


@dataclass(frozen=True)
class PolicyEntry:
    kind: str
    policy_cls: type
    config_cls: type


@dataclass(frozen=True)
class PolicySpec:
    """What a built policy was built from: enough to build it again (``Policy.save`` writes it)."""

    kind: str
    config: Any
    obs_dim: int | None
    act_dim: int | None


class UnknownPolicyError(KeyError):
    """A policy kind that no module registered."""

    def __str__(self) -> str:
        return str(self.args[0])


_ENTRIES: dict[str, PolicyEntry] = {}
_plugins_loaded = False


def register_policy(kind: str, config_cls: type):
    """Class decorator: register the decorated policy class under ``kind``, built from ``config_cls``."""
    if not dataclasses.is_dataclass(config_cls) or "kind" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise TypeError(f"{getattr(config_cls, '__name__', config_cls)!r} must be a dataclass with a 'kind' field")
    default = config_cls.__dataclass_fields__["kind"].default
    if default != kind:
        raise ValueError(f"{config_cls.__name__}.kind defaults to {default!r}; a policy registered as {kind!r} needs "
                         f"kind: Literal[{kind!r}] = {kind!r}")

    def decorate(policy_cls: type) -> type:
        old = _ENTRIES.get(kind)
        if old is not None and _qualname(old.policy_cls) != _qualname(policy_cls):  # a module reload re-registers
            raise ValueError(f"policy kind {kind!r} is already registered by {_qualname(old.policy_cls)}")
        _ENTRIES[kind] = PolicyEntry(kind, policy_cls, config_cls)
        return policy_cls

    return decorate


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_policy_modules() -> None:
    """Import the built-in policy modules and those of the ``steerlab.policies`` entry points (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in BUILTIN_POLICY_MODULES:
        importlib.import_module(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def registered_kinds() -> list[str]:
    load_policy_modules()
    return sorted(_ENTRIES)


def policy_entry(kind: str) -> PolicyEntry:
    """The registered entry of ``kind``; an :class:`UnknownPolicyError` listing the known kinds otherwise."""
    load_policy_modules()
    if not isinstance(kind, str) or kind not in _ENTRIES:
        raise UnknownPolicyError(f"unknown policy kind {kind!r}; registered kinds: {', '.join(sorted(_ENTRIES))} (a policy "
                       f"from another package registers itself with steerlab.registry.register_policy when its module "
                       f"is imported)")
    return _ENTRIES[kind]


def build_policy(policy_cfg, obs_dim: int | None, act_dim: int | None):
    """A fresh policy of ``policy_cfg``'s kind, for observations ``[obs_dim]`` and actions ``[act_dim]``; it
    remembers what it was built from (``policy.spec``) so that it can save itself."""
    kind = getattr(policy_cfg, "kind", None)
    entry = policy_entry(kind)
    if not isinstance(policy_cfg, entry.config_cls):
        raise TypeError(f"policy kind {kind!r} is built from a {entry.config_cls.__name__}, got a "
                        f"{type(policy_cfg).__name__}")
    policy = entry.policy_cls(policy_cfg, obs_dim, act_dim)
    policy.spec = PolicySpec(kind, policy_cfg, obs_dim, act_dim)
    return policy

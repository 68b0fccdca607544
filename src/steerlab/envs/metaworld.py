"""MetaWorld (Farama-Foundation/Metaworld 3.1.1) single-task environments, its scripted experts, a DART
perturbation for collection and a via-point variant of the experts whose demonstrations are multimodal.

``metaworld`` is imported lazily, so ``steerlab`` imports without it; every entry point that needs it raises an
:class:`ImportError` saying how to install it.

Task variation. ``make_metaworld_env(task, seed)`` builds MetaWorld's goal-observable class of ``task`` with
``seed``: MetaWorld draws the task's random vector (object and goal positions, with the task's own rejection rule)
once from ``numpy.random`` seeded with ``seed`` and freezes it, so every reset of that env starts from the same
state and the same seed always gives the same variation. This is the distribution MT1 samples its 50 goals from
(``partially_observable=False``, the goal in ``obs[36:39]``), one draw per seed instead of a list of 50.

Seeds. Demonstrations use seeds ``seed + i`` for ``i < episodes`` (``DEMO_SEED0 = 0``); evaluation starts at
``EVAL_SEED0 = 100_000`` like steerlab's particle task, so the two never overlap for fewer than 100 000 demos.

Observation (39-D, float32): hand position ``[0:3]``, gripper opening ``[3]``, object positions and quaternions
``[4:18]``, the previous frame's ``[0:18]`` in ``[18:36]``, goal position ``[36:39]``. Action (4-D, in [-1, 1]):
hand displacement (x, y, z; 1 = 1 cm per step) and gripper effort. A step is 5 MuJoCo steps of 2.5 ms (80 Hz).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np

OBS_DIM = 39
ACT_DIM = 4
HAND = slice(0, 3)
GRIPPER = 3
OBJECT_POS = slice(4, 7)
GOAL = slice(36, 39)
MAX_EPISODE_STEPS = 500  # MetaWorld's max_path_length
FPS = 80  # 1 / (frame_skip 5 * timestep 2.5 ms), MetaWorld's render_fps
DEMO_SEED0 = 0
EVAL_SEED0 = 100_000
INSTALL_HINT = "pip install -c constraints.txt -e '.[metaworld]'"

# tasks whose expert heads for the goal rather than an object first (the via-points are placed towards it)
_VIA_TOWARDS_GOAL = {"reach-v3", "reach-wall-v3"}
# where along the hand -> target segment the via-points sit, when 0.5 does not suit the expert: the door-open expert
# drops onto the handle as soon as the hand is within 12 cm of it, which a midway detour already is (2/10 successes
# there against 10/10 beside the hand's start, seeds 0-9)
_VIA_ALONG = {"door-open-v3": 0.0}


def _import_metaworld():
    try:
        import metaworld  # noqa: F401  (registers the envs and checks the install)
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as e:
        raise ImportError(f"MetaWorld is not installed ({e}); install it with: {INSTALL_HINT}") from e
    # the experts warn when a gain saturates the action; scripted_expert clips it to [-1, 1] as the env does
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE, ENV_POLICY_MAP


def metaworld_tasks() -> list[str]:
    """The MetaWorld v3 task names (``"push-v3"``, ...), sorted."""
    envs, _ = _import_metaworld()
    return sorted(k.removesuffix("-goal-observable") for k in envs)


def check_task(task: str) -> str:
    """``task`` if it is a MetaWorld v3 task name, else a :class:`ValueError` listing the valid names."""
    names = metaworld_tasks()
    if task not in names:
        raise ValueError(f"unknown MetaWorld task {task!r}; valid names: {', '.join(names)}")
    return task


class MetaWorldEnv(gym.Wrapper):
    """One MetaWorld task variation as a gymnasium env: float32 observations, an episode limit and optional
    termination on success.

    ``info`` carries ``success`` (MetaWorld's, at this step), ``success_once`` (at this or any earlier step of
    the episode) and ``first_success_step`` (1-based index of the first step whose ``info["success"]`` was true,
    ``None`` before that). The episode truncates after ``max_episode_steps`` steps.
    """

    def __init__(self, env, task: str, seed: int, max_episode_steps: int, terminate_on_success: bool):
        super().__init__(env)
        self.task, self.seed = task, int(seed)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        # MetaWorld truncates (and refuses further steps) at its own max_path_length
        env.unwrapped.max_path_length = self.max_episode_steps
        # MetaWorld's goal-observable classes keep the goal-hidden space (goal bounds 0) as observation_space;
        # sawyer_observation_space is the one their observations are clipped to
        box = env.unwrapped.sawyer_observation_space
        self.observation_space = gym.spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32),
                                                dtype=np.float32)
        self.steps = 0
        self.first_success_step: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None and int(seed) != self.seed:
            raise ValueError(f"this {self.task} env was made for seed {self.seed} (its task variation is fixed when "
                             f"it is made); make another with make_metaworld_env({self.task!r}, seed={seed})")
        obs, info = self.env.reset()
        self.steps, self.first_success_step = 0, None
        return obs.astype(np.float32), {**info, "success_once": False, "first_success_step": None}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(ACT_DIM), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        success = bool(info.get("success", 0.0))
        if success and self.first_success_step is None:
            self.first_success_step = self.steps
        info = {**info, "success": success, "success_once": self.first_success_step is not None,
                "first_success_step": self.first_success_step}
        terminated = bool(terminated) or (self.terminate_on_success and success)
        truncated = bool(truncated) or self.steps >= self.max_episode_steps
        return obs.astype(np.float32), float(reward), terminated, truncated, info


def make_metaworld_env(task: str, seed: int, max_episode_steps: int = MAX_EPISODE_STEPS,
                       terminate_on_success: bool = False, render_mode: str | None = None) -> MetaWorldEnv:
    """One MetaWorld ``task`` (e.g. ``"push-v3"``) with the task variation fixed by ``seed`` (module doc).

    Observations are 39-D float32, actions 4-D in [-1, 1] (clipped). ``max_episode_steps`` defaults to
    MetaWorld's 500. ``terminate_on_success=False`` (the default) runs every episode to its limit, as MetaWorld
    does; with True an episode ends at its first success step (faster evaluation; the success rate is the same,
    since success is counted at any step either way). ``render_mode`` goes to MetaWorld (``"rgb_array"``, ...).
    """
    envs, _ = _import_metaworld()
    check_task(task)
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32) (MetaWorld seeds numpy's legacy generator), got {seed}")
    if int(max_episode_steps) < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
    raw = envs[f"{task}-goal-observable"](seed=seed, render_mode=render_mode)
    return MetaWorldEnv(raw, task, seed, max_episode_steps, terminate_on_success)


def scripted_expert(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """MetaWorld's scripted expert of ``task`` as ``obs [39] -> action [4]`` (float32, clipped to [-1, 1]).
    The experts are stateless: the action depends on the observation only."""
    _, policies = _import_metaworld()
    check_task(task)
    if task not in policies:
        raise ValueError(f"MetaWorld has no scripted expert for {task!r}")
    expert = policies[task]()

    def act(obs: np.ndarray) -> np.ndarray:
        a = expert.get_action(np.asarray(obs, dtype=np.float64))
        return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)

    return act


def perturb(action: np.ndarray, sigma: float, prob: float, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """DART perturbation of one step: with probability ``prob``, ``action + N(0, sigma^2)`` per component clipped
    to [-1, 1]; otherwise ``action``. Returns ``(executed action, perturbed?)``. The caller records the clean
    ``action`` as the label, so demonstrations show the expert correcting from states off its path."""
    if sigma <= 0 or prob <= 0 or rng.random() >= prob:
        return action, False
    noisy = np.clip(action + sigma * rng.standard_normal(action.shape), -1.0, 1.0)
    return noisy.astype(np.float32), True


def via_points(task: str, obs0: np.ndarray, k: int = 2, offset: float = 0.1, along: float | None = None,
               low=None, high=None) -> np.ndarray:
    """``k`` via-points ``[k, 3]`` for the episode starting at ``obs0``. In the table plane, take the segment
    from the hand to the expert's first target (the object, or the goal for tasks in which the hand heads for the
    goal) and the point at fraction ``along`` of it (None: the task's default, 0.5 for most tasks); the via-points
    lie on the line through that point perpendicular to the segment, at signed distances
    ``linspace(-offset, offset, k)`` (metres), at the height of the higher of hand and target. Clipped to
    ``[low, high]`` (the hand's workspace) when given."""
    if k < 2:
        raise ValueError(f"k (the number of via-points) must be >= 2, got {k}")
    obs0 = np.asarray(obs0, dtype=np.float64)
    hand = obs0[HAND]
    target = obs0[GOAL] if task in _VIA_TOWARDS_GOAL else obs0[OBJECT_POS]
    d = target[:2] - hand[:2]
    n = np.linalg.norm(d)
    perp = np.array([-d[1], d[0]]) / n if n > 1e-6 else np.array([1.0, 0.0])
    if along is None:
        along = _VIA_ALONG.get(task, 0.5)
    mid = hand[:2] + along * (target[:2] - hand[:2])
    pts = np.empty((k, 3))
    for i, s in enumerate(np.linspace(-offset, offset, k)):
        pts[i, :2] = mid + s * perp
        pts[i, 2] = max(hand[2], target[2])
    if low is not None and high is not None:
        pts = np.clip(pts, np.asarray(low) + 0.01, np.asarray(high) - 0.01)
    return pts


class ViaPointExpert:
    """The scripted expert preceded by a detour through one of ``k`` via-points (:func:`via_points`), chosen at
    random per episode: a proportional controller on the hand position (``gain`` per metre, in action units,
    clipped to [-1, 1], gripper open) drives the hand to the chosen point until it is within ``tol`` metres (or
    ``max_detour_steps`` steps have passed), then the expert takes over for the rest of the episode.

    Call :meth:`reset` with the first observation at the start of each episode; ``index`` is the chosen
    via-point, ``reached_step`` the step at which the detour ended (``None`` while it runs).
    """

    def __init__(self, task: str, k: int = 2, offset: float = 0.1, along: float | None = None, tol: float = 0.02,
                 gain: float = 10.0, max_detour_steps: int = 150, low=None, high=None):
        self.task, self.k, self.offset, self.tol, self.gain = task, int(k), float(offset), float(tol), float(gain)
        self.along = along
        self.max_detour_steps, self.low, self.high = int(max_detour_steps), low, high
        self.expert = scripted_expert(task)
        self.index: int | None = None
        self.points: np.ndarray | None = None
        self.reached_step: int | None = None
        self._t = 0

    @property
    def via_point(self) -> np.ndarray:
        if self.points is None:
            raise RuntimeError("call ViaPointExpert.reset(obs0, rng) at the start of the episode")
        return self.points[self.index]

    def reset(self, obs0: np.ndarray, rng: np.random.Generator | None = None, index: int | None = None) -> int:
        """Start an episode: via-points from ``obs0``, the chosen one ``index`` or drawn with ``rng``."""
        self.points = via_points(self.task, obs0, self.k, self.offset, self.along, self.low, self.high)
        if index is None:
            if rng is None:
                raise ValueError("pass rng (to draw the via-point) or index")
            index = int(rng.integers(self.k))
        if not 0 <= int(index) < self.k:
            raise ValueError(f"via-point index must be in [0, {self.k}), got {index}")
        self.index, self.reached_step, self._t = int(index), None, 0
        return self.index

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        target = self.via_point
        if self.reached_step is None:
            hand = np.asarray(obs[HAND], dtype=np.float64)
            if np.linalg.norm(target - hand) <= self.tol or self._t >= self.max_detour_steps:
                self.reached_step = self._t
        self._t += 1
        if self.reached_step is not None:
            return self.expert(obs)
        a = np.empty(ACT_DIM, dtype=np.float32)
        a[:3] = np.clip(self.gain * (target - np.asarray(obs[HAND], dtype=np.float64)), -1.0, 1.0)
        a[3] = -1.0
        return a


def make_expert(task: str, multimodal: bool = False, env: MetaWorldEnv | None = None, **via_kwargs):
    """``scripted_expert(task)``, or with ``multimodal`` a :class:`ViaPointExpert` whose via-points stay in
    ``env``'s hand workspace (when ``env`` is given)."""
    if not multimodal:
        return scripted_expert(task)
    if env is not None:
        via_kwargs.setdefault("low", env.unwrapped.mocap_low)
        via_kwargs.setdefault("high", env.unwrapped.mocap_high)
    return ViaPointExpert(task, **via_kwargs)

"""Rollout videos of MetaWorld episodes, rendered by replaying the recorded actions.

MetaWorld's physics is deterministic given the env seed and the actions, so an episode evaluated in a batch
(:func:`~steerlab.eval.metaworld.evaluate_metaworld`, which records ``actions``) is rendered afterwards without
slowing the evaluation down: :func:`render_metaworld_episode` rebuilds the env of the seed, replays the actions,
checks that the replayed hand follows the recorded one, and writes an animated GIF (Pillow) through
``mujoco.Renderer``. Offscreen rendering needs an OpenGL backend: ``MUJOCO_GL=egl`` on a machine without a display
(set before mujoco is first imported -- importing metaworld imports it -- e.g. ``MUJOCO_GL=egl python ...``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def render_metaworld_episode(task: str, seed: int, actions: np.ndarray, path: str | Path, *,
                             hand: np.ndarray | None = None, every: int | None = None, max_frames: int = 40,
                             size: tuple[int, int] = (176, 132),
                             camera: str = "corner", caption: str = "", boxes=()) -> dict:
    """Replay ``actions [T, 4]`` on ``task`` at env ``seed`` and write every ``every``-th frame to the GIF ``path``
    (None: as many as keep at most ``max_frames`` frames, at least every 4th; ``size`` = width, height), with
    ``caption`` and the step number drawn on each frame. ``hand [T+1, 3]`` (the evaluation's record): the replay
    must reproduce it (max deviation < 1 mm), or a ``RuntimeError`` says the episode cannot be replayed. ``boxes``:
    ``(center [3], half [3], rgba)`` boxes drawn in the scene only (a keep-out box, via-points). MetaWorld's
    ``corner*`` cameras are mounted upside down; their frames are flipped upright.
    Returns ``{"path", "frames", "replay_max_hand_error"}``."""
    import sys

    if "MUJOCO_GL" not in os.environ:
        if "mujoco" in sys.modules:
            raise RuntimeError("offscreen rendering needs an OpenGL backend chosen before mujoco is imported: run "
                               "with MUJOCO_GL=egl (or osmesa) in the environment")
        os.environ["MUJOCO_GL"] = "egl"
    import mujoco
    from PIL import Image, ImageDraw

    from steerlab.envs.metaworld import HAND, make_metaworld_env

    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != 4:
        raise ValueError(f"actions must be [T, 4], got {list(actions.shape)}")
    if hand is not None and np.shape(hand) != (len(actions) + 1, 3):
        raise ValueError(f"hand must be [T+1={len(actions) + 1}, 3] (the hand before and after each action), got "
                         f"{list(np.shape(hand))}")
    if every is None:
        every = max(4, -(-len(actions) // max(int(max_frames) - 1, 1)))
    env = make_metaworld_env(task, int(seed), max_episode_steps=max(len(actions), 1), terminate_on_success=False)
    obs, _ = env.reset()
    u = env.unwrapped
    w, h = size
    renderer = mujoco.Renderer(u.model, h, w)
    frames, replayed = [], [obs[HAND].copy()]

    def grab(t: int):
        renderer.update_scene(u.data, camera=camera)
        for b in boxes:
            _add_box(renderer.scene, *b)
        px = renderer.render()
        img = Image.fromarray(np.ascontiguousarray(px[::-1]) if camera.startswith("corner") else px)
        d = ImageDraw.Draw(img)
        d.text((4, 2), f"{caption}  t={t}", fill=(255, 255, 255))
        frames.append(img)

    try:
        grab(0)
        for t, a in enumerate(actions, 1):
            obs, *_ = env.step(a)
            replayed.append(obs[HAND].copy())
            if t % every == 0 or t == len(actions):
                grab(t)
    finally:
        renderer.close()
        env.close()
    err = None
    if hand is not None:
        err = float(np.abs(np.stack(replayed) - np.asarray(hand)).max())
        if err > 1e-3:
            raise RuntimeError(f"the replay of {task} seed {seed} leaves the recorded hand path by {err:.4f} m; "
                               "the episode was not produced by these actions from this seed")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 * every / 80), loop=0,
                   optimize=True)
    return {"path": str(path), "frames": len(frames), "replay_max_hand_error": err}


def _add_box(scene, center, half, rgba=(0.9, 0.1, 0.1, 0.35)) -> None:
    """A translucent box geom in the rendered scene only (no physics)."""
    import mujoco

    if scene.ngeom >= scene.maxgeom:
        return
    g = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(g, mujoco.mjtGeom.mjGEOM_BOX, np.asarray(half, np.float64), np.asarray(center, np.float64),
                        np.eye(3).flatten(), np.asarray(rgba, np.float32))
    scene.ngeom += 1

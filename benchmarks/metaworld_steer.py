"""Steering trained MetaWorld diffusion/flow policies, every figure counted in the simulator (closed loop, one env per
held-out seed, MetaWorld's own success):

    python benchmarks/metaworld_steer.py stress  --run-dir RUN [--budgets 100 300] [--episodes 50]
    python benchmarks/metaworld_steer.py keepout --run-dir RUN [--half 0.03] [--steps 10] [--guidance 5 20]
    python benchmarks/metaworld_steer.py mode    --run-dir RUN_TRAINED_WITH_--multimodal [--steps 10]
    python benchmarks/metaworld_steer.py leverage --run-dir RUN [--run-dir2 ...]   (spread only, no rollouts)

Every variant is a policy whose each chunk is chosen at every re-planning (:class:`ChunkChoicePolicy`); the
objectives are functions of the end-effector path the chunk would drive (``steerlab.steer.metaworld``).

- ``stress``: an adversary maximizes the distance between the predicted hand path and the object (obs[4:7]; the
  door handle, the drawer's, the button...) at each decision, searching the chunk noise by best-of-N, CEM
  (population 8) or gradient ascent (Adam, lr 0.1, per-restart clip 1, z0 on the sqrt(d) shell) at an equal budget of
  denoiser evaluations per decision (a backward pass counted at its measured cost). Failures are MetaWorld
  episodes without success; ``base`` is the policy on its own noise (its failure rate); the chosen noises' chi-CDF
  says how many lie inside the prior's central 99% (by construction all of the gradient's, kept on the shell).
  *failures per 1000 NFE*: failing episodes over the denoiser evaluations of all their decisions (a decision every
  ``n_action_steps`` steps), so an episode that the base policy fails on its own counts too.
- ``keepout``: a box of half size ``--half`` m centred on the scripted expert's hand path half way along it (by
  length; on reach-v3 the straight reach to the goal), a constraint the policy never saw; violated when the real
  hand enters it.
  Variants: the base; noise optimization (``--steps`` Adam steps on z0 per decision, shell-projected, minimizing
  the penetration of the predicted path over the whole chunk into the box's circumscribed ball, ``--cost``);
  best-of-N with ``3 --steps + 1`` noises per decision (an Adam step's forward and backward counted as three chains,
  as in steering.py); energy guidance of the clean-chunk estimate at each ``--guidance`` scale (clean-chunk
  policies only). Every variant draws its noises from the same seed.
- ``mode``: on a policy trained on the via-point demos (``--multimodal``), episode i requests via-point i % 2;
  the objective is the predicted path's distance to it until the real hand has come within ``--tol`` of it. The
  metric: episodes whose hand reached the requested via-point (within ``--tol``) before the other, and success.
  Variants: the base; noise optimization; best-of-N at its budget; energy guidance (clean-chunk policies).
- ``leverage``: the spread (std over 16 noises, action units) of the executed actions at the scripted expert's
  observations at steps 0, 30 and 60 of 10 held-out episodes (run past success): how much the noise can move this
  policy at all.

``--videos`` renders the first episode of each variant as a GIF into benchmarks/results/videos/ (replaying the
recorded actions; MUJOCO_GL=egl), with the keep-out box (red) or the requested via-point (green) and the other
(grey) drawn in. Writes benchmarks/results/metaworld_steer_<experiment>_<task>.json (``--name``).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering for --videos, chosen before mujoco is imported

import dataclasses  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import command_line, load_policy_run, parser, rate, results_path, save  # noqa: E402

from steerlab.envs.metaworld import HAND, OBJECT_POS, via_points  # noqa: E402
from steerlab.eval.metaworld import eval_seeds, evaluate_metaworld, expert_act_fn  # noqa: E402
from steerlab.steer.guidance import sample_guided  # noqa: E402
from steerlab.steer.metaworld import BallPenetration, BoxPenetration, ChunkChoicePolicy, PointDistance  # noqa: E402
from steerlab.steer.noise_opt import (  # noqa: E402
    NoiseGradientError,
    NoiseOptConfig,
    chi_cdf,
    measure_backward_cost,
    optimize_noise,
    project_to_shell,
)
from steerlab.steer.policy_chain import chain_nfe, policy_sampler  # noqa: E402
from steerlab.steer.stress import inside_central, search_noises  # noqa: E402


class Tally:
    """Per-variant counters of the decisions a chooser made: denoiser evaluations and the chosen noises' chi-CDF."""

    def __init__(self):
        self.decisions, self.nfe, self.cdf = 0, 0.0, []

    def add(self, z: torch.Tensor, nfe: float) -> None:
        self.decisions += len(z)
        self.nfe += float(nfe) * len(z)
        self.cdf += chi_cdf(z.detach().cpu()).tolist()

    def summary(self) -> dict:
        cdf = np.asarray(self.cdf)
        return {"decisions": self.decisions, "nfe_per_decision": self.nfe / max(self.decisions, 1),
                "noises_inside_central_99": float(inside_central(cdf).mean()) if len(cdf) else None}


def plain_chooser(policy, gen: torch.Generator, tally: Tally):
    def choose(hist):
        chain = policy_sampler(policy, hist, noise_mode="none", grad="none")
        z = torch.randn(chain.shape, generator=gen)
        tally.add(z, chain.nfe)
        with torch.no_grad():
            return chain.sample_fn(z)
    return choose


def search_chooser(policy, method: str, objective_fn, budget: int, backward_cost: float, gen: torch.Generator,
                   tally: Tally, lr: float = 0.1):
    """Maximize ``objective_fn(hist)`` over each decision's noise with ``method`` at ``budget`` NFE."""
    def choose(hist):
        chain = policy_sampler(policy, hist, noise_mode="none", grad="full")
        z0 = torch.randn(chain.shape, generator=gen)
        r = search_noises(method, chain, objective_fn(hist), z0, budget, backward_cost, lr,
                          seed=int(torch.randint(0, 2**30, (1,), generator=gen)))
        tally.add(r.z, r.nfe)
        return r.sample.detach()
    return choose


def steer_chooser(policy, objective_fn, steps: int, lr: float, gen: torch.Generator, tally: Tally,
                  active_fn=None):
    """Minimize ``objective_fn(hist)`` by Adam on z0 (``steps``, shell-projected); rows where ``active_fn(hist)`` is
    False sample plainly from their first noise."""
    def choose(hist):
        chain = policy_sampler(policy, hist, noise_mode="none", grad="full")
        z0 = torch.randn(chain.shape, generator=gen)
        z0 = project_to_shell(z0)  # the search keeps its iterates on the shell
        try:
            res = optimize_noise(chain.sample_fn, objective_fn(hist), z0,
                                 NoiseOptConfig(lr=lr, steps=steps, project_shell=True), nfe_per_sample=chain.nfe,
                                 progress=False, log=None)
        except NoiseGradientError:  # every row far from the objective's reach (e.g. no obstacle ahead): nothing to do
            with torch.no_grad():
                out = chain.sample_fn(z0)
            tally.add(z0, chain.nfe)
            return out
        out, z = res.sample.detach(), res.z.detach()
        if active_fn is not None:
            act = torch.as_tensor(active_fn(hist))
            out = torch.where(act[:, None, None], out, res.initial_sample.detach())
            z = torch.where(act[:, None, None], z, z0)
        tally.add(z, res.nfe)
        return out
    return choose


def best_of_n_chooser(policy, objective_fn, n: int, gen: torch.Generator, tally: Tally, active_fn=None):
    """The zero-order control: ``n`` noises per decision, the chunk of the lowest objective (rows where
    ``active_fn(hist)`` is False: the first noise's)."""
    def choose(hist):
        chain = policy_sampler(policy, hist, noise_mode="none", grad="none")
        obj = objective_fn(hist)
        with torch.no_grad():
            z = torch.randn((n, *chain.shape), generator=gen)
            chunks = torch.stack([chain.sample_fn(z[j]) for j in range(n)])
            best = torch.stack([obj(c) for c in chunks]).argmin(0)
        if active_fn is not None:
            best = torch.where(torch.as_tensor(active_fn(hist)), best, torch.zeros_like(best))
        rows = torch.arange(chain.shape[0])
        tally.add(z[best, rows], n * chain.nfe)
        return chunks[best, rows]
    return choose


def guidance_chooser(policy, cost_fn, scale: float, gen: torch.Generator, tally: Tally, active_fn=None):
    """Energy guidance of the clean-chunk estimate by ``cost_fn(hist)`` at ``scale`` (rows where ``active_fn(hist)``
    is False: the same noise unguided)."""
    def choose(hist):
        z = torch.randn((hist.shape[0], *policy.chunk_shape), generator=gen)
        cost = cost_fn(hist)
        if active_fn is not None:
            act = torch.as_tensor(active_fn(hist), dtype=torch.float32)
            cost = (lambda c, f=cost: f(c) * act.to(c))
        tally.add(z, chain_nfe(policy.cfg.sampler, policy.cfg.num_inference_steps))
        return sample_guided(policy, hist, z, cost, scale)
    return choose


def rollout(policy, task: str, seeds, choose, observe=None) -> dict:
    t0 = time.time()
    res = evaluate_metaworld(ChunkChoicePolicy(policy, choose, observe), task, seeds)
    res["wall_seconds"] = time.time() - t0
    return res


def write_videos(task: str, variants: dict, name: str, boxes=()) -> dict:
    """The first episode of each variant as a GIF; ``boxes``: what to draw in it (the first episode's keep-out box,
    via-points), ``(center, half, rgba)``."""
    from steerlab.eval.video import render_metaworld_episode

    out = {}
    for label, res in variants.items():
        e = res["episodes"][0]
        path = results_path("videos") / f"{Path(name).name}_{label.replace(' ', '_')}.gif"
        r = render_metaworld_episode(task, e["seed"], e["actions"], path, hand=e["hand"], boxes=boxes,
                                     caption=f"{task} {label} {'success' if e['success'] else 'failure'}")
        out[label] = {"path": f"videos/{path.name}", "seed": e["seed"], "success": e["success"],
                      "frames": r["frames"]}
        print(f"wrote {path}")
    return out


def leverage(policy, task: str, episodes: int = 10, noises: int = 16) -> dict:
    res = evaluate_metaworld(expert_act_fn(task), task, eval_seeds(episodes), record_obs=True,
                             terminate_on_success=False, max_episode_steps=61)
    out = {}
    for t in (0, 30, 60):
        o = torch.tensor(np.stack([e["obs"][t] for e in res["episodes"]]), dtype=torch.float32)
        chain = policy_sampler(policy, o[:, None].repeat(1, policy.n_obs_steps, 1), grad="none")
        g = torch.Generator().manual_seed(t)
        with torch.no_grad():
            s = torch.stack([chain.sample_fn(torch.randn(chain.shape, generator=g)) for _ in range(noises)])
        k = policy.n_action_steps
        out[f"step{t}"] = {"spread": float(s[:, :, :k].std(0).mean()), "mean_abs_action": float(s[:, :, :k].abs().mean())}
    return out


def summarize(res: dict, tally: Tally, extra: dict | None = None) -> dict:
    eps = res["episodes"]
    return {"success": rate([e["success"] for e in eps]), "failure": rate([not e["success"] for e in eps]),
            "mean_length": res["mean_length"], "wall_seconds": res["wall_seconds"], **tally.summary(), **(extra or {})}


def main() -> None:
    ap = parser(__doc__, "run_dir", "threads")
    ap.add_argument("experiment", choices=("stress", "keepout", "mode", "leverage"))
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed0", type=int, default=100_000, help="first held-out env seed")
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300], help="stress: NFE per decision")
    ap.add_argument("--methods", nargs="+", default=["best-of-N", "CEM", "gradient"],
                    choices=["best-of-N", "CEM", "gradient"], help="stress: the searches")
    ap.add_argument("--steps", type=int, default=10, help="keepout/mode: Adam steps on z0 per decision")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--half", type=float, default=0.03, help="keepout: half size of the box (m)")
    ap.add_argument("--guidance", type=float, nargs="*", default=[5.0, 20.0], help="keepout and mode: energy guidance scales")
    ap.add_argument("--cost", choices=("ball", "box"), default="ball",
                    help="keepout: the objective -- penetration of the box's circumscribed ball (pushes the path "
                         "sideways) or of the box itself (nearest-face depth)")
    ap.add_argument("--sharpness", type=float, default=400.0,
                    help="keepout: k of the objective's softplus(k depth) / k (per metre): lower reaches further out")
    ap.add_argument("--tol", type=float, default=0.03, help="mode: via-point reached within this distance (m)")
    ap.add_argument("--variants", nargs="*", default=None, help="keepout/mode: run only these variants (labels)")
    ap.add_argument("--videos", action="store_true", help="render each variant's first episode as a GIF")
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    cfg, policy, ckpt = load_policy_run(a)
    if not cfg.env.startswith("metaworld/"):
        raise SystemExit(f"{a.run_dir} was trained on {cfg.env!r}; this benchmark needs a MetaWorld run "
                         "(steerlab train diffusion-metaworld --env metaworld/<task>)")
    if not hasattr(policy, "sample"):
        raise SystemExit(f"{a.run_dir} holds a {type(policy).__name__}; steering needs a diffusion or flow policy")
    task = cfg.env.split("/", 1)[1]
    seeds = eval_seeds(a.episodes, a.seed0)
    name = a.name or f"metaworld_steer_{a.experiment}_{task.replace('-', '_')}"
    gen = torch.Generator()

    def fresh() -> torch.Generator:
        """The noise stream, re-seeded: every variant draws the same noises in the same order."""
        return gen.manual_seed(0)
    k = policy.n_action_steps
    results: dict = {}
    runs: dict = {}
    meta = {"experiment": a.experiment, "task": task, "command": command_line(), "checkpoint": str(ckpt),
            "run_dir": a.run_dir, "policy": dataclasses.asdict(cfg.policy), "episodes": a.episodes,
            "seed0": a.seed0, "demos": cfg.episodes, "multimodal_demos": cfg.multimodal}

    def base():
        t = Tally()
        runs["base"] = rollout(policy, task, seeds, plain_chooser(policy, fresh(), t))
        results["base"] = summarize(runs["base"], t)

    def report(label):
        r = results[label]
        print(f"{label:22s} success {r['success']['rate']:.0%} " + " ".join(
            f"{key} {r[key]['rate']:.0%}" for key in ("avoided", "requested_via", "success_and_avoided",
                                                       "success_and_requested") if key in r)
              + f" NFE/decision {r['nfe_per_decision']:.0f} ({r['wall_seconds']:.0f} s)", flush=True)

    boxes = []
    if a.experiment == "leverage":
        results["leverage"] = leverage(policy, task)
        print(results["leverage"])
    elif a.experiment == "stress":
        base()
        report("base")
        obj_fn = lambda hist: PointDistance(hist[:, -1, OBJECT_POS], hist[:, -1, HAND], k)  # noqa: E731
        chain = policy_sampler(policy, torch.zeros(4, policy.n_obs_steps, policy.obs_dim), grad="full")
        bc = measure_backward_cost(chain.sample_fn, lambda s: s.sum((1, 2)), torch.randn(chain.shape))
        meta["backward_cost"] = bc
        for b in a.budgets:
            for m in a.methods:
                t = Tally()
                label = f"{m} {b}"
                runs[label] = rollout(policy, task, seeds, search_chooser(policy, m, obj_fn, b, bc, fresh(), t, a.lr))
                res = summarize(runs[label], t)
                n_fail = res["failure"]["count"]
                nfe_total = t.nfe / max(t.decisions, 1) * sum(-(-e["length"] // k) for e in runs[label]["episodes"])
                res["failures_per_1000_nfe"] = 1000.0 * n_fail / max(nfe_total, 1e-9)
                results[label] = res
                report(label)
    elif a.experiment == "keepout":
        expert = evaluate_metaworld(expert_act_fn(task), task, seeds)
        centers = []
        for e in expert["episodes"]:  # the expert's hand half way along its path (by length)
            s = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(e["hand"], axis=0), axis=1))]
            centers.append(e["hand"][int(np.searchsorted(s, s[-1] / 2))])
        centers_t = torch.as_tensor(np.stack(centers), dtype=torch.float32)
        half = torch.full((3,), a.half)
        boxes = [(centers[0], np.full(3, a.half), (0.9, 0.1, 0.1, 0.35))]
        meta["box"] = {"half": a.half, "centers": np.stack(centers).round(4).tolist(),
                       "expert_inside": float(np.mean([(np.abs(e["hand"] - c) < a.half).all(1).any()
                                                       for e, c in zip(expert["episodes"], centers)]))}
        if a.cost == "box":
            cost = lambda hist: BoxPenetration(centers_t, half, hist[:, -1, HAND], None, a.sharpness)  # noqa: E731
        else:  # the box's circumscribed ball
            cost = lambda hist: BallPenetration(centers_t, a.half * 3**0.5, hist[:, -1, HAND], None,  # noqa: E731
                                                a.sharpness)
        meta["cost"], meta["sharpness"] = a.cost, a.sharpness

        def avoided(res):
            return [not (np.abs(e["hand"] - c) < a.half).all(1).any() for e, c in zip(res["episodes"], centers)]

        variants = {"base": None, "noise-opt": lambda t: steer_chooser(policy, cost, a.steps, a.lr, fresh(), t),
                    "best-of-N": lambda t: best_of_n_chooser(policy, cost, 3 * a.steps + 1, fresh(), t)}
        if getattr(policy.cfg, "prediction_type", None) == "sample":
            variants.update({f"guidance {s:g}": (lambda s: lambda t: guidance_chooser(policy, cost, s, fresh(), t))(s)
                             for s in a.guidance})
        for label, make in variants.items():
            if a.variants is not None and label not in a.variants:
                continue
            if make is None:
                base()
            else:
                t = Tally()
                runs[label] = rollout(policy, task, seeds, make(t))
                results[label] = summarize(runs[label], t)
            av = np.array(avoided(runs[label]))
            ok = np.array([e["success"] for e in runs[label]["episodes"]])
            results[label].update(avoided=rate(av), success_and_avoided=rate(av & ok))
            report(label)
    else:  # mode
        if not cfg.multimodal:
            raise SystemExit(f"{a.run_dir} was not trained on the via-point demos (--multimodal); mode selection "
                             "needs a policy with modes to choose between")
        from steerlab.envs.metaworld import make_metaworld_env

        pts = []
        for s in seeds:
            env = make_metaworld_env(task, s)
            o, _ = env.reset()
            pts.append(via_points(task, o, low=env.unwrapped.mocap_low, high=env.unwrapped.mocap_high))
            env.close()
        pts = np.stack(pts)  # [E, 2, 3]
        req = np.arange(len(seeds)) % 2
        target = torch.as_tensor(pts[np.arange(len(seeds)), req], dtype=torch.float32)
        reached = np.zeros(len(seeds), bool)
        meta["via_points"] = pts.round(4).tolist()
        boxes = [(pts[0, req[0]], np.full(3, 0.01), (0.1, 0.8, 0.1, 0.8)),  # requested: green; the other: grey
                 (pts[0, 1 - req[0]], np.full(3, 0.01), (0.5, 0.5, 0.5, 0.6))]

        def observe(obs):  # every step: the hand may pass the via-point between two decisions
            reached[:] |= np.linalg.norm(obs[:, HAND].numpy() - pts[np.arange(len(seeds)), req], axis=1) < a.tol

        def active(hist):
            return ~reached

        obj = lambda hist: PointDistance(target, hist[:, -1, HAND], None)  # noqa: E731

        def which_first(res):
            out = []
            for i, e in enumerate(res["episodes"]):
                d = np.linalg.norm(e["hand"][:, None] - pts[i][None], axis=-1)  # [T+1, 2]
                hit = [np.flatnonzero(d[:, j] < a.tol) for j in range(2)]
                first = [h[0] if len(h) else np.inf for h in hit]
                out.append(int(np.argmin(first)) if np.isfinite(min(first)) else -1)
            return np.array(out)

        variants = {"base": None,
                    "noise-opt": lambda t: steer_chooser(policy, obj, a.steps, a.lr, fresh(), t, active_fn=active),
                    "best-of-N": lambda t: best_of_n_chooser(policy, obj, 3 * a.steps + 1, fresh(), t, active_fn=active)}
        if getattr(policy.cfg, "prediction_type", None) == "sample":
            variants.update({f"guidance {s:g}": (lambda s: lambda t: guidance_chooser(policy, obj, s, fresh(), t,
                                                                                      active_fn=active))(s)
                             for s in a.guidance})
        for label, make in variants.items():
            if a.variants is not None and label not in a.variants:
                continue
            reached[:] = False
            if make is None:
                base()
            else:
                t = Tally()
                runs[label] = rollout(policy, task, seeds, make(t), observe)
                results[label] = summarize(runs[label], t)
            first = which_first(runs[label])
            ok = np.array([e["success"] for e in runs[label]["episodes"]])
            results[label].update(requested_via=rate(first == req), other_via=rate(first == 1 - req),
                                  no_via=rate(first == -1), success_and_requested=rate(ok & (first == req)))
            report(label)
    if a.videos and runs:
        meta["videos"] = write_videos(task, runs, name, boxes)
    save(name, {**meta, "results": results})


if __name__ == "__main__":
    main()

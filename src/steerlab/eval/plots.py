"""Matplotlib figures written as PNG (Agg backend, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def panel_grid(n: int, cols: int = 4, size: tuple[float, float] = (3.0, 3.0)):
    """A figure of ``n`` panels in rows of ``cols``, each ``size`` inches (spare panels switched off) ->
    ``(fig, [ax] * n)``."""
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def save_titled(fig, path: Path, title: str, shown: str, legend_space: float = 0.0) -> Path:
    """Title ``fig`` with ``title`` and what it shows (``shown``, e.g. how many of how many episodes), leave
    ``legend_space`` (a fraction of its height) at the bottom for a figure legend, save it as ``path`` and close it."""
    fig.suptitle(f"{title} ({shown})" if title else shown, fontsize=10)
    fig.tight_layout(rect=(0, legend_space, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_rollouts(episodes: list[dict], path: Path, max_episodes: int = 16, title: str = "") -> Path:
    """Agent paths and goals (first two dims; position against time for 1-D), one panel per episode, the first
    ``max_episodes`` of them (the figure says how many of how many)."""
    eps = episodes[:max_episodes]
    fig, axes = panel_grid(len(eps))
    for ax, e in zip(axes, eps):
        p, g = e["positions"], e["goals"]
        if p.shape[1] >= 2:
            ax.plot(p[:, 0], p[:, 1], "-", color="tab:blue", lw=1.2, label="agent path")
            ax.plot(p[0, 0], p[0, 1], "o", color="tab:blue", ms=4, label="start")
            ax.plot(*g[0, :2], "s", color="tab:green", ms=7, label="goal 1")
            ax.plot(*g[1, :2], "*", color="tab:red", ms=10, label="goal 2")
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylim(-0.05, 1.05)
            ax.set_aspect("equal")
            ax.set_xlabel("position[0]", fontsize=7)
            ax.set_ylabel("position[1]", fontsize=7)
        else:
            t = np.arange(len(p))
            ax.plot(t, p[:, 0], color="tab:blue", label="agent position")
            ax.axhline(g[0, 0], color="tab:green", ls="--", label="goal 1")
            ax.axhline(g[1, 0], color="tab:red", ls="--", label="goal 2")
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel("step", fontsize=7)
            ax.set_ylabel("position", fontsize=7)
        ax.set_title(f"seed {e['seed']}: {'success' if e['success'] else 'fail'}", fontsize=9,
                     color="tab:green" if e["success"] else "tab:red")
        ax.tick_params(labelsize=7)
    if eps:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    return save_titled(fig, path, title, f"the first {len(eps)} of {len(episodes)} episodes", legend_space=0.04)


def plot_training_curves(metrics_csv: Path, path: Path) -> Path | None:
    """One panel per logged metric against the step."""
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    keys = [k for k in rows[0] if k != "step"]
    keys = [k for k in keys if any(r.get(k) not in (None, "") for r in rows)]
    fig, axes = panel_grid(len(keys), cols=3, size=(4.0, 2.6))
    for ax, k in zip(axes, keys):
        pts = [(int(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]
        s, v = zip(*pts)
        ax.plot(s, v, ".-" if len(pts) < 30 else "-", lw=1)
        ax.set_title(k, fontsize=9)
        if k in ("lr", "info_nce", "loss", "action_mse", "monitor_action_mse") and min(v) > 0:
            ax.set_yscale("log")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def plot_energy_landscape(policy, obs_hist: torch.Tensor, path: Path, demo_action=None, grid: int = 121,
                          generator: torch.Generator | None = None, title: str = "") -> Path | None:
    """Energy ``E(o, ·)`` over the action box (1- and 2-D actions) with the inference samples on it.

    ``obs_hist [n_obs, Do]`` raw observation history; ``demo_action`` optional raw action to mark.
    """
    A = policy.act_dim
    if A not in (1, 2) or not hasattr(policy, "energy"):
        return None
    dev = policy.env_low.device  # tensors go to the policy's device, arrays for matplotlib come back to the CPU
    lo, hi = policy.env_low.cpu().numpy(), policy.env_high.cpu().numpy()
    obs = torch.as_tensor(obs_hist, dtype=torch.float32, device=dev)[None]
    o = policy.obs_features(obs)
    inf = policy.infer_normalized(o, generator, num_samples=min(policy.cfg.inference_samples, 256))
    samples = policy.act_norm.unnormalize(inf["samples"][0]).cpu().numpy()
    init = policy.act_norm.unnormalize(inf["init"][0]).cpu().numpy()
    best = policy.act_norm.unnormalize(inf["action"][0]).cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if A == 2:
        xs, ys = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
        X, Y = np.meshgrid(xs, ys)
        acts = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], -1), dtype=torch.float32, device=dev)[None]
        E = policy.energy(obs, acts)[0].cpu().numpy().reshape(X.shape)
        im = ax.contourf(X, Y, E, levels=40, cmap="viridis")
        fig.colorbar(im, ax=ax, label="energy E = -f")
        ax.scatter(init[:, 0], init[:, 1], s=4, c="white", alpha=0.4, label="initial samples")
        ax.scatter(samples[:, 0], samples[:, 1], s=6, c="orange", label=f"{policy.cfg.inference} samples")
        ax.plot(best[0], best[1], "r*", ms=14, label="selected")
        if demo_action is not None:
            ax.plot(demo_action[0], demo_action[1], "wx", ms=12, mew=2, label="demonstration")
        ax.set_xlabel("action[0]")
        ax.set_ylabel("action[1]")
    else:
        xs = np.linspace(lo[0], hi[0], grid)
        E = policy.energy(obs, torch.as_tensor(xs, dtype=torch.float32, device=dev)[None, :, None])[0].cpu().numpy()
        ax.plot(xs, E, color="tab:purple", label="energy E = -f")
        es = policy.energy(obs, torch.as_tensor(samples, dtype=torch.float32, device=dev)[None])[0].cpu().numpy()
        ax.scatter(samples[:, 0], es, s=8, c="orange", label=f"{policy.cfg.inference} samples", zorder=3)
        ax.axvline(best[0], color="red", label="selected")
        if demo_action is not None:
            ax.axvline(demo_action[0], color="black", ls="--", label="demonstration")
        ax.set_xlabel("action")
        ax.set_ylabel("energy")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or "energy landscape E(o, a)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_noise_result(summary: dict, obs_dicts: list[dict], before: torch.Tensor, after: torch.Tensor, out: Path,
                      args) -> list[Path]:
    """``loss.png`` (mean and best objective per optimizer step) and ``chunks.png`` (the sampled chunks
    before, dashed, and after, solid, over the particle scene: agent, goals, target / obstacle; first two
    action dims, or the action against the chunk step for 1-D)."""
    out = Path(out)
    made = []
    hist = summary.get("history") or []
    if hist:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([h["step"] for h in hist], [h["loss_mean"] for h in hist], label="objective (mean over restarts)")
        ax.plot([h["step"] for h in hist], [h["best_mean"] for h in hist], label="best so far (mean)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("objective")
        ax.set_title(f"{args.objective}, {args.direction}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
        made.append(out / "loss.png")
    b, a = before.numpy(), after.numpy()
    fig, axes = panel_grid(min(len(b), 8))
    for i, ax in enumerate(axes):
        o = obs_dicts[i]
        if b.shape[-1] >= 2:
            ax.plot(b[i, :, 0], b[i, :, 1], "--", color="tab:gray", lw=1.2, label="before")
            ax.plot(a[i, :, 0], a[i, :, 1], "-", color="tab:purple", lw=1.5, label="after")
            ax.plot(*o["pos_agent"][:2], "o", color="tab:blue", ms=5, label="agent")
            ax.plot(*o["pos_first_goal"][:2], "s", color="tab:green", ms=7, label="goal 1")
            ax.plot(*o["pos_second_goal"][:2], "*", color="tab:red", ms=10, label="goal 2")
            if getattr(args, "target", None):
                t = [float(v) for v in args.target.split(",")]
                ax.plot(t[0], t[1], "x", color="k", ms=8, label="target")
            if getattr(args, "objective", "") == "obstacle" and args.center:
                c = [float(v) for v in args.center.split(",")]
                ax.add_patch(plt.Circle(c[:2], args.radius, color="tab:orange", alpha=0.3))
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylim(-0.05, 1.05)
            ax.set_aspect("equal")
        else:
            ax.plot(b[i, :, 0], "--", color="tab:gray", label="before")
            ax.plot(a[i, :, 0], "-", color="tab:purple", label="after")
            ax.set_xlabel("chunk step")
        il, bl = summary["initial_loss"][i], summary["best_loss"][i]
        ax.set_title(f"#{i}: {il:.3f} -> {bl:.3f}", fontsize=9)
        if i == 0:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"sampled chunks before / after noise optimization ({args.objective}, {args.direction})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "chunks.png", dpi=110)
    plt.close(fig)
    made.append(out / "chunks.png")
    return made



def plot_nav_rollouts(episodes: list[dict], path: Path, max_episodes: int = 12, title: str = "",
                      family: str = "mixed") -> Path:
    """Nav2D episodes on their maps (rebuilt from the env seed): obstacles, routes, start, goal and the robot's
    path, titled with the outcome."""
    from steerlab.envs.nav2d import Nav2DEnv, plot_map

    eps = episodes[:max_episodes]
    fig, axes = panel_grid(len(eps))
    for ax, e in zip(axes, eps):
        env = Nav2DEnv(family=family)
        env.reset(seed=e["seed"])
        outcome = "success" if e["success"] else ("collision" if e["collision"] else "time-out")
        plot_map(ax, env.map, path=e.get("path"), title=f"seed {e['seed']} ({env.map.family}): {outcome}")
        ax.title.set_fontsize(8)
        env.close()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_metaworld_rollouts(episodes: list[dict], path: Path, max_episodes: int = 20, title: str = "") -> Path:
    """MetaWorld end-effector paths of the first ``max_episodes`` episodes (the figure says how many of how many):
    the hand's x-y path seen from above with its start, the object and the goal of each episode (from ``obs0``)
    and the via-points when the episode has ``via_points``; and the hand's height against the step. Successful
    episodes are green, failed ones red."""
    from matplotlib.lines import Line2D

    eps = episodes[:max_episodes]
    fig, (top, side) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1, 1.3]})
    for e in eps:
        c = "tab:green" if e["success"] else "tab:red"
        h = np.asarray(e["hand"])
        top.plot(h[:, 0], h[:, 1], "-", color=c, lw=1, alpha=0.7)
        top.plot(h[0, 0], h[0, 1], "o", color=c, ms=4)
        side.plot(np.arange(len(h)), h[:, 2], "-", color=c, lw=1, alpha=0.7)
        if "obs0" in e:
            o = np.asarray(e["obs0"])
            top.plot(o[4], o[5], "s", mfc="none", mec="tab:blue", ms=6)
            top.plot(o[36], o[37], "*", color="tab:orange", ms=9)
        if "via_points" in e:
            v = np.asarray(e["via_points"])
            top.plot(v[:, 0], v[:, 1], "x", color="tab:purple", ms=6)
    top.set_xlabel("hand x (m)")
    top.set_ylabel("hand y (m)")
    top.set_aspect("equal", adjustable="datalim")
    top.set_title("end effector seen from above", fontsize=9)
    side.set_xlabel("step")
    side.set_ylabel("hand z (m)")
    side.set_title("end-effector height", fontsize=9)
    for ax in (top, side):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    k = sum(bool(e["success"]) for e in eps)
    handles = [Line2D([], [], color="tab:green", label=f"success ({k})"),
               Line2D([], [], color="tab:red", label=f"failure ({len(eps) - k})"),
               Line2D([], [], ls="", marker="o", color="gray", ms=4, label="start")]
    if any("obs0" in e for e in eps):
        handles += [Line2D([], [], ls="", marker="s", mfc="none", mec="tab:blue", label="object at start"),
                    Line2D([], [], ls="", marker="*", color="tab:orange", ms=9, label="goal")]
    if any("via_points" in e for e in eps):
        handles.append(Line2D([], [], ls="", marker="x", color="tab:purple", label="via-points"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_titled(fig, path, title, f"{len(eps)} of {len(episodes)} episodes shown", legend_space=0.06)

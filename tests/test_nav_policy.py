import math

import numpy as np
import pytest
import torch

from steerlab.nav.data import NavWindowDataset, load_nav_dataset
from steerlab.nav.intent import IntentConfig, drop_masks, gaussian_kl, guided_eps
from steerlab.nav.model import NavModel, NavModelConfig
from steerlab.nav.policy import NavPolicy, NavPolicyConfig

TINY = NavModelConfig(n_obs_steps=2, cnn_channels=(4, 8), embed_dim=16, n_layers=1, n_heads=2, down_dims=(8, 16),
                      time_embed_dim=8, n_groups=4, dist_hidden=(8,), intent=IntentConfig(z1_dim=4, z2_dim=3, hidden=16))


def _obs(b, g, n=2):
    img = (torch.rand(b, n, 32, 32, generator=g) < 0.3).float()
    return img, torch.randn(b, n, 6, generator=g), torch.randn(b, 2, generator=g)


@pytest.fixture(scope="module")
def nav_data(tmp_path_factory):
    from steerlab.data.collect_nav2d import collect_nav2d

    path = tmp_path_factory.mktemp("nav") / "nav.zarr"
    collect_nav2d(path, episodes=6, seed=0, workers=1, progress=False)
    return load_nav_dataset(path)


def _policy(data=None, seed=0, **kw):
    torch.manual_seed(seed)
    p = NavPolicy(NavPolicyConfig(model=TINY, **kw))
    if data is not None:
        p.fit_normalizers(data.data)
    return p


# ------------------------------------------------------------------------------------------ call interface
def test_seed_call_interface_shapes():
    torch.manual_seed(0)
    m = NavModel(TINY)
    g = torch.Generator().manual_seed(0)
    img, state, goal = _obs(5, g)
    mask = torch.tensor([True, False, True, False, False])
    emb = m("vision_encoder", obs_img=img, obs_state=state, goal=goal, input_goal_mask=mask)
    assert emb.shape == (5, TINY.embed_dim)
    assert torch.equal(emb, m("vision_encoder", obs_img=img, obs_state=state, goal_img=goal, input_goal_mask=mask))
    x = torch.randn(5, 8, 2, generator=g)
    lat = torch.randn(5, 7, generator=g)
    for kw in ({}, {"latent_z": lat}, {"latent_z": lat, "lambda_cfg": 2.0}, {"latent_z": lat, "lambda_cfg": (1.5, 0.5)}):
        eps = m("noise_pred_net", sample=x, timestep=torch.full((5,), 3.0), global_cond=emb, **kw)
        assert eps.shape == (5, 8, 2)
    assert m("noise_pred_net", sample=x, timestep=3, global_cond=emb, latent_z=lat).shape == (5, 8, 2)
    assert m("dist_pred_net", obsgoal_cond=emb).shape == (5,)
    with pytest.raises(ValueError, match="obs_img must be"):
        m("vision_encoder", obs_img=img[:, :1], obs_state=state, goal=goal)
    with pytest.raises(ValueError, match="latent_z must be"):
        m("noise_pred_net", sample=x, timestep=3, global_cond=emb, latent_z=lat[:, :5])
    with pytest.raises(ValueError, match="unknown function"):
        m("action_head", sample=x)


def test_goal_masked_embedding_ignores_goal():
    torch.manual_seed(0)
    m = NavModel(TINY)
    g = torch.Generator().manual_seed(1)
    img, state, goal = _obs(4, g)
    other = goal * 5 + 3
    masked = torch.ones(4, dtype=torch.bool)
    a = m("vision_encoder", obs_img=img, obs_state=state, goal=goal, input_goal_mask=masked)
    b = m("vision_encoder", obs_img=img, obs_state=state, goal=other, input_goal_mask=masked)
    assert torch.equal(a, b)
    # and with no goal at all (exploration)
    assert torch.equal(a, m("vision_encoder", obs_img=img, obs_state=state, input_goal_mask=masked))


def test_goal_mask_convention_true_means_masked():
    torch.manual_seed(0)
    m = NavModel(TINY)
    g = torch.Generator().manual_seed(2)
    img, state, goal = _obs(4, g)
    other = goal + 1.0
    mask = torch.tensor([True, False, True, False])
    a = m("vision_encoder", obs_img=img, obs_state=state, goal=goal, input_goal_mask=mask)
    b = m("vision_encoder", obs_img=img, obs_state=state, goal=other, input_goal_mask=mask)
    changed = (a - b).abs().amax(1) > 1e-4
    assert changed.tolist() == [False, True, False, True]  # only unmasked (False) rows see the goal
    # None means goal-conditioned for every row
    c = m("vision_encoder", obs_img=img, obs_state=state, goal=goal)
    assert torch.allclose(c[1], a[1]) and not torch.allclose(c[0], a[0])
    with pytest.raises(ValueError, match="True = goal masked"):
        m("vision_encoder", obs_img=img, obs_state=state, goal=goal, input_goal_mask=mask.float())
    with pytest.raises(ValueError, match="goal is required"):
        m("vision_encoder", obs_img=img, obs_state=state, input_goal_mask=mask)


# ------------------------------------------------------------------------------------------------ CFG
def test_guided_eps_golden():
    e0, e1, e2 = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([7.0])
    assert guided_eps(e0, None, e2, 0.0).item() == 1.0
    assert guided_eps(e0, None, e2, 1.0).item() == 7.0
    assert guided_eps(e0, None, e2, 2.0).item() == 13.0  # 1 + 2 * 6
    assert guided_eps(e0, e1, e2, 2.0, 0.5).item() == 7.0  # 1 + 2 * 2 + 0.5 * 4
    assert guided_eps(e0, e1, e2, 1.5, 1.5).item() == guided_eps(e0, None, e2, 1.5).item()


def test_cfg_in_noise_pred_net_with_stub_eps():
    torch.manual_seed(0)
    m = NavModel(TINY)
    # stub eps: the sum of the latent (so each level gives a known constant)
    m._eps = lambda sample, t, cond, lat: lat.sum(-1).view(-1, 1, 1).expand_as(sample)
    d1 = TINY.intent.z1_dim
    with torch.no_grad():
        m.intent.null_z1.fill_(0.25)
        m.intent.null_z2.fill_(-0.5)
    lat = torch.tensor([[1.0] * d1 + [2.0] * 3])
    x, emb = torch.zeros(1, 8, 2), torch.zeros(1, TINY.embed_dim)
    none = 0.25 * d1 - 1.5
    z1 = 1.0 * d1 - 1.5
    full = 1.0 * d1 + 6.0

    def call(lam):
        return m("noise_pred_net", sample=x, timestep=1, global_cond=emb, latent_z=lat, lambda_cfg=lam)[0, 0, 0].item()

    assert call(0.0) == pytest.approx(none)
    assert call(1.0) == pytest.approx(full)
    assert call(None) == pytest.approx(full)
    assert call(3.0) == pytest.approx(none + 3 * (full - none))
    assert call((0.5, 2.0)) == pytest.approx(none + 0.5 * (z1 - none) + 2.0 * (full - z1))
    unc = m("noise_pred_net", sample=x, timestep=1, global_cond=emb, latent_z=None)[0, 0, 0].item()
    assert unc == pytest.approx(none)


def test_cfg_real_network_lambda_0_and_1():
    torch.manual_seed(0)
    m = NavModel(TINY).double()
    g = torch.Generator().manual_seed(3)
    x, emb = torch.randn(3, 8, 2, generator=g).double(), torch.randn(3, TINY.embed_dim, generator=g).double()
    lat, t = torch.randn(3, 7, generator=g).double(), torch.tensor([0.0, 4.0, 9.0]).double()
    cond = m("noise_pred_net", sample=x, timestep=t, global_cond=emb, latent_z=lat)
    unc = m("noise_pred_net", sample=x, timestep=t, global_cond=emb, latent_z=None)
    assert not torch.allclose(cond, unc)
    assert torch.allclose(m("noise_pred_net", sample=x, timestep=t, global_cond=emb, latent_z=lat, lambda_cfg=0.0), unc)
    assert torch.allclose(m("noise_pred_net", sample=x, timestep=t, global_cond=emb, latent_z=lat, lambda_cfg=1.0), cond)


# -------------------------------------------------------------------------------------------- intent
def test_dropout_rates_match_config():
    g = torch.Generator().manual_seed(0)
    n, p1, p2 = 200_000, 0.1, 0.3
    d1, d2 = drop_masks(n, p1, p2, g)
    assert bool((d2 | ~d1).all())  # dropping z1 drops z2
    none = d1.float().mean().item()
    z1_only = (~d1 & d2).float().mean().item()
    both = (~d2).float().mean().item()
    assert abs(none - p1) < 0.005 and abs(z1_only - (1 - p1) * p2) < 0.005 and abs(both - (1 - p1) * (1 - p2)) < 0.005
    # independence of the two draws: P(drop z2 | z1 kept) = p2
    assert abs(d2[~d1].float().mean().item() - p2) < 0.005
    with pytest.raises(ValueError, match="p_drop_z1"):
        drop_masks(4, 1.5, 0.1)


def test_latent_uses_null_embeddings_where_dropped():
    torch.manual_seed(0)
    m = NavModel(TINY)
    it = m.intent
    z1, z2 = torch.randn(3, 4), torch.randn(3, 3)
    lat = it.latent(z1, z2, torch.tensor([True, False, False]), torch.tensor([False, True, False]))
    assert torch.equal(lat[0], torch.cat([it.null_z1, it.null_z2]))  # z1 dropped -> z2 dropped too
    assert torch.equal(lat[1], torch.cat([z1[1], it.null_z2]))
    assert torch.equal(lat[2], torch.cat([z1[2], z2[2]]))
    with pytest.raises(ValueError, match="z2 without z1"):
        it.latent(None, z2)


def test_kl_golden_value():
    mu_q, lv_q = torch.tensor([1.0, -0.5]), torch.log(torch.tensor([0.5, 2.0]))
    mu_p, lv_p = torch.tensor([0.0, 1.0]), torch.log(torch.tensor([1.0, 4.0]))
    # by hand: 0.5 (ln 2 + 1.5 - 1) + 0.5 (ln 2 + (2 + 2.25) / 4 - 1) = ln 2 + 0.28125
    assert gaussian_kl(mu_q, lv_q, mu_p, lv_p).item() == pytest.approx(math.log(2) + 0.28125, abs=1e-6)
    # standard normal prior: 0.5 (v - 1 - ln v + mu^2) per dim
    assert gaussian_kl(torch.tensor([2.0]), torch.log(torch.tensor([3.0]))).item() == pytest.approx(0.5 * (3 - 1 - math.log(3) + 4))
    assert gaussian_kl(torch.zeros(2), torch.zeros(2)).item() == 0.0


# ------------------------------------------------------------------------------------- differentiability
def test_z2_gradient_through_ddim_matches_finite_differences():
    p = _policy(sampler="ddim", clip_sample=None, num_inference_steps=5).double()
    g = torch.Generator().manual_seed(4)
    img, state, goal = _obs(2, g)
    ref = torch.randn(2, 32, 2, generator=g)
    with torch.no_grad():
        cond = p.condition({"obs_img": img, "obs_state": state, "goal_rel": goal})
        z1 = p.encode_z1(ref)
    z0 = torch.randn(2, 8, 2, generator=g).double()
    w = torch.randn(2, 8, 2, generator=g).double()
    z2 = torch.randn(2, 3, generator=g).double().requires_grad_(True)

    def loss(z2_):
        return (p.sample(cond, z0, z1, z2_, grad="full", lambda_cfg=1.5) * w).sum()

    (grad,) = torch.autograd.grad(loss(z2), z2)
    fd = torch.zeros_like(z2)
    h = 1e-6
    with torch.no_grad():
        for i in range(z2.numel()):
            e = torch.zeros_like(z2).view(-1)
            e[i] = h
            e = e.view_as(z2)
            fd.view(-1)[i] = (loss(z2 + e) - loss(z2 - e)) / (2 * h)
    cos = torch.nn.functional.cosine_similarity(grad.flatten(), fd.flatten(), dim=0).item()
    assert grad.abs().max() > 1e-6 and cos >= 0.999
    # gradients also reach the initial noise z0 (spot-check 4 coordinates against central differences)
    z0v = z0.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad((p.sample(cond, z0v, z1, z2.detach(), grad="full", lambda_cfg=1.5) * w).sum(), z0v)
    with torch.no_grad():
        for i in (0, 5, 17, 30):
            e = torch.zeros(z0.numel(), dtype=z0.dtype)
            e[i] = h
            e = e.view_as(z0)
            f = lambda z: (p.sample(cond, z, z1, z2, grad="none", lambda_cfg=1.5) * w).sum()  # noqa: E731
            assert g0.view(-1)[i].item() == pytest.approx(((f(z0 + e) - f(z0 - e)) / (2 * h)).item(), rel=1e-5, abs=1e-8)
    # the checkpointed chain gives the same gradient
    z2c = z2.detach().clone().requires_grad_(True)
    (gc,) = torch.autograd.grad((p.sample(cond, z0, z1, z2c, grad="checkpoint", lambda_cfg=1.5) * w).sum(), z2c)
    assert torch.allclose(gc, grad, atol=1e-10)


# ------------------------------------------------------------------------------------- training, seeds
def test_training_lowers_loss(nav_data):
    ds = NavWindowDataset.from_episodes(nav_data, TINY.n_obs_steps)
    p = _policy(nav_data)
    full = ds.batch(torch.arange(len(ds)))

    def eval_loss():
        with torch.no_grad():
            return np.mean([p.compute_loss(full, torch.Generator().manual_seed(100 + k))[0].item() for k in range(4)])

    before = eval_loss()
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, _ = p.compute_loss(ds.batch(torch.randint(len(ds), (32,), generator=g)), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


def test_same_seed_same_numbers(nav_data):
    ds = NavWindowDataset.from_episodes(nav_data, TINY.n_obs_steps)
    batch = ds.batch(torch.arange(6))
    out = []
    for _ in range(2):
        p = _policy(nav_data, seed=0)
        loss, metrics = p.compute_loss(batch, torch.Generator().manual_seed(7))
        act = p.predict_action_chunk(batch, generator=torch.Generator().manual_seed(8))
        out.append((loss.item(), metrics, act))
    assert out[0][0] == out[1][0] and out[0][1] == out[1][1] and torch.equal(out[0][2], out[1][2])
    assert out[0][2].shape == (6, 1, 16) and out[0][2].abs().max() <= 1.0
    other = _policy(nav_data, seed=1).compute_loss(batch, torch.Generator().manual_seed(7))[0].item()
    assert other != out[0][0]


def test_state_dict_holds_normalizers(nav_data):
    p = _policy(nav_data, seed=0)
    q = _policy(None, seed=5)
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.act_norm.lo, p.act_norm.lo) and torch.equal(q.ref_norm.hi, p.ref_norm.hi)
    batch = NavWindowDataset.from_episodes(nav_data, TINY.n_obs_steps).batch(torch.arange(3))
    a = p.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
    b = q.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_missing_batch_key_is_named(nav_data):
    p = _policy(nav_data)
    batch = NavWindowDataset.from_episodes(nav_data, TINY.n_obs_steps).batch(torch.arange(3))
    del batch["ref_traj"]
    with pytest.raises(KeyError, match="ref_traj"):
        p.compute_loss(batch)


def test_closed_loop_rollout_reports_one_outcome(nav_data):
    from steerlab.nav.rollout import rollout_nav, summarize

    p = _policy(nav_data)
    eps = rollout_nav(p, [0, 1, 2], env_kwargs={"max_steps": 3}, generator=torch.Generator().manual_seed(0))
    assert [e["seed"] for e in eps] == [0, 1, 2]
    for e in eps:
        assert e["success"] + e["collision"] + e["timeout"] == 1 and 1 <= e["length"] <= 3
        assert e["route_id"] is not None and e["ref_traj"].shape == (32, 2) and e["path"].shape[1] == 2
    s = summarize(eps)
    assert s["success_rate"] + s["collision_rate"] + s["timeout_rate"] == pytest.approx(1.0)
    explore = rollout_nav(p, [0], env_kwargs={"max_steps": 2}, route=None, goal_masked=True,
                          generator=torch.Generator().manual_seed(0))
    assert explore[0]["route_id"] is None
    # held z2 / z0 make an episode a deterministic function of the observations; frames are recorded per decision
    z2, z0 = torch.randn(2, p.z2_dim), torch.randn(2, *p.chunk_shape)
    a = rollout_nav(p, [0, 1], env_kwargs={"max_steps": 2}, z2=z2, z0=z0, record=True)
    b = rollout_nav(p, [0, 1], env_kwargs={"max_steps": 2}, z2=z2, z0=z0, generator=torch.Generator().manual_seed(9))
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea["path"], eb["path"])
        assert len(ea["frames"]) == ea["length"] + 1 and ea["frames"][0].ndim == 3
    # executing only the first waypoint of each decision: the robot moves at most one waypoint's reach per decision
    (e1,) = rollout_nav(p, [0], env_kwargs={"max_steps": 1}, z2=z2[:1], z0=z0[:1], execute_waypoints=1)
    assert np.linalg.norm(e1["path"][-1] - e1["path"][0]) <= np.sqrt(2) * 0.04 + 1e-6


def test_windows_and_split(nav_data):
    from steerlab.nav.data import split_episodes

    ds = NavWindowDataset.from_episodes(nav_data, 3)
    ends = nav_data.episode_ends
    assert len(ds) == ends[-1]
    t = int(ends[0])  # first step of episode 1: its history tiles its own first frame
    b = ds.batch(torch.tensor([t, t + 1]))
    occ = torch.as_tensor(nav_data.data["occupancy"]).float()
    assert torch.equal(b["obs_img"][0], occ[[t, t, t]]) and torch.equal(b["obs_img"][1], occ[[t, t, t + 1]])
    assert torch.equal(b["actions"][1].flatten(), torch.as_tensor(nav_data.data["action"][t + 1]))
    train, val = split_episodes(nav_data, 2)
    assert train.n_episodes == nav_data.n_episodes - 2 and val.n_episodes == 2
    assert train.n_steps + val.n_steps == nav_data.n_steps
    with pytest.raises(ValueError, match="leaves no training"):
        split_episodes(nav_data, nav_data.n_episodes)


def test_nav_policy_trains_evaluates_and_optimizes_intent_through_the_cli(tmp_path):
    """`steerlab train nomad-nav2d` on a dataset from `steerlab collect nav2d` runs through the one training loop
    (held-out monitor, checkpoints, resume, Nav2D evaluation and report), and `steerlab intent optimize` writes
    intents, trajectories and a plot whose objective moved in the asked direction."""
    import json as _json

    from safetensors.torch import load_file

    from steerlab.cli import main

    small = ["--episodes", "6", "--val-episodes", "1", "--log-interval", "10", "--out-dir", str(tmp_path),
             "--run-name", "nav", "--eval.episodes", "3", "--eval.batch", "3", "--dataset", str(tmp_path / "nav.zarr"),
             "--no-progress", "--policy.model.embed-dim", "32"]
    main(["collect", "nav2d", "--episodes", "6", "--out", str(tmp_path / "nav.zarr")])
    main(["train", "nomad-nav2d", "--steps", "20", "--no-eval", *small])
    main(["train", "nomad-nav2d", "--steps", "30", "--resume", *small])
    run = tmp_path / "nav"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("30,") and "monitor_action_mse" in rows[0]
    m = _json.loads((run / "metrics.json").read_text())
    assert m["episodes"] == 3 and abs(m["success_rate"] + m["collision_rate"] + m["timeout_rate"] - 1) < 1e-9
    assert (run / "plots" / "rollouts.png").exists() and "collision" in (run / "report.md").read_text()

    # the re-ranked deployment next to the single draw, on the same seeds
    main(["eval", str(run), "--rerank", "4", "--execute-waypoints", "4", "--episodes", "3"])
    tt = _json.loads((run / "metrics_test_time.json").read_text())["variants"]
    assert list(tt) == ["single draw", "re-rank 4 by clearance, execute 4 of 8 waypoints"]
    assert tt["single draw"]["success_rate"] == m["success_rate"]  # the run's own evaluation, reproduced
    assert "re-rank 4" in (run / "report_test_time.md").read_text()
    with pytest.raises(SystemExit, match="energy-critic run"):
        main(["eval", str(run), "--rerank", "4", "--guide", "1.0"])
    with pytest.raises(SystemExit, match="needs --rerank"):
        main(["eval", str(run), "--execute-waypoints", "4"])

    main(["intent", "optimize", str(run), "--maps", "3", "--steps", "4", "--lr", "0.2", "--no-progress"])
    out = run / "intent" / "collision"
    res = _json.loads((out / "result.json").read_text())
    assert sum(res["objective_after"]) >= sum(res["objective_before"])  # best iterate of a maximization
    z = load_file(str(out / "intent.safetensors"))
    assert z["z2"].shape == (3, z["z2_init"].shape[1]) and (out / "trajectories.png").exists()
    # on the sqrt(d) shell: every intent is a typical draw of the N(0, I) prior
    d = z["z2"].shape[1]
    assert torch.allclose(z["z2"].norm(dim=1), torch.full((3,), d ** 0.5), atol=1e-4)
    # against the re-ranked deployment: one z2 per map shared by its candidates
    main(["intent", "optimize", str(run), "--maps", "2", "--steps", "2", "--candidates", "3", "--no-progress",
          "--out", str(tmp_path / "cand")])
    tr = load_file(str(tmp_path / "cand" / "trajectories.safetensors"))
    assert tr["waypoints_after"].shape == (2, 3, 8, 2)
    assert load_file(str(tmp_path / "cand" / "intent.safetensors"))["z2"].shape == (2, d)
    with pytest.raises(SystemExit, match="joint-noise"):
        main(["intent", "optimize", str(run), "--maps", "2", "--candidates", "3", "--joint-noise", "--no-progress"])
    # the coarse intent as the variable, toward the other route of two-route maps, z2 held at its prior draws
    main(["intent", "optimize", str(run), "--maps", "2", "--steps", "3", "--objective", "route", "--variable", "z1",
          "--candidates", "2", "--lr", "0.2", "--no-progress", "--out", str(tmp_path / "z1")])
    res = _json.loads((tmp_path / "z1" / "result.json").read_text())
    assert res["variable"] == "z1" and sum(res["objective_after"]) <= sum(res["objective_before"])
    z = load_file(str(tmp_path / "z1" / "intent.safetensors"))
    assert z["z1"].shape == z["z1_init"].shape == (2, z["z1"].shape[1]) and z["z2"].shape == (4, d)
    torch.testing.assert_close((z["z1"] - z["z1_init"]).norm(dim=1), torch.tensor(res["z1_moved"]))
    with pytest.raises(SystemExit, match="no prior"):
        main(["intent", "optimize", str(run), "--maps", "2", "--variable", "z1", "--chi-weight", "1", "--no-progress"])


def test_rotate_heading_matches_the_env_and_finds_first_decisions(tmp_path):
    """A quarter turn of the batch is exactly what the env and the oracle give with the start heading turned:
    same image, goal, route, oracle action and state. Only first decisions are recognised as such."""
    from steerlab.data.collect_nav2d import collect_nav2d
    from steerlab.envs.nav2d import Nav2DEnv, seeded_oracle
    from steerlab.nav.data import first_decision_rows, rotate_heading

    for seed in (5, 11):
        env = Nav2DEnv()
        o, _ = env.reset(seed=seed)
        th = env.heading
        orc = seeded_oracle(env, seed)
        b = {"obs_img": torch.as_tensor(np.stack([o["occupancy"]] * 2)[None]).float(),
             "obs_state": torch.as_tensor(np.stack([o["state"]] * 2)[None]),
             "goal_rel": torch.as_tensor(o["goal_rel"][None]),
             "ref_traj": torch.as_tensor(orc.ref_traj_robot(o["state"])[None]),
             "actions": torch.as_tensor(orc.act(o)[None]).view(1, 8, 2)}
        assert first_decision_rows(b).all()
        for k in range(4):
            r = rotate_heading(b, torch.tensor([k]))
            o2 = env.set_state(heading=th + k * math.pi / 2)
            orc2 = seeded_oracle(env, seed)
            np.testing.assert_array_equal(r["obs_img"][0, -1].numpy(), o2["occupancy"])
            np.testing.assert_allclose(r["goal_rel"][0].numpy(), o2["goal_rel"], atol=1e-6)
            np.testing.assert_allclose(r["ref_traj"][0].numpy(), orc2.ref_traj_robot(o2["state"]), atol=1e-6)
            np.testing.assert_allclose(r["actions"][0].reshape(-1).numpy(), orc2.act(o2), atol=1e-5)
            np.testing.assert_allclose(r["obs_state"][0, -1].numpy(), o2["state"], atol=1e-6)
        env.close()
    path = tmp_path / "d.zarr"
    collect_nav2d(path, episodes=3, seed=0, workers=1, progress=False)
    ds = NavWindowDataset.from_zarr(path, 2)
    batch = ds.batch(torch.arange(len(ds)))
    e = load_nav_dataset(path).episode_ends
    starts = np.concatenate([[0], e[:-1]])
    expect = np.zeros(len(ds), bool)
    expect[starts] = True
    np.testing.assert_array_equal(first_decision_rows(batch).numpy(), expect)


def test_rotate_first_turns_only_first_decisions_in_the_loss(nav_data):
    """compute_loss with rotate_first == the plain loss on the batch turned by the quarter turns it draws first
    (non-first rows keep k = 0), so the augmentation touches exactly the first decisions."""
    from steerlab.nav.data import first_decision_rows, rotate_heading

    ds = NavWindowDataset.from_episodes(nav_data, 2)
    batch = ds.batch(torch.arange(len(ds)))
    first = first_decision_rows(batch)
    assert 0 < first.sum() < len(first)
    rot, plain = _policy(nav_data, rotate_first=True), _policy(nav_data)
    plain.load_state_dict(rot.state_dict())
    loss_rot, _ = rot.compute_loss(batch, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    k = torch.randint(4, (len(first),), generator=g) * first
    assert (k[first] > 0).any() and (k[~first] == 0).all()
    loss_plain, _ = plain.compute_loss(rotate_heading(batch, k), g)
    torch.testing.assert_close(loss_rot, loss_plain)
    loss_unrotated, _ = plain.compute_loss(batch, torch.Generator().manual_seed(3))
    assert not torch.allclose(loss_rot, loss_unrotated)


def test_reranked_rollout(nav_data):
    from steerlab.nav.rollout import rollout_nav

    p = _policy(nav_data)
    kw = {"env_kwargs": {"max_steps": 3}}
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = rollout_nav(p, [0, 1], generator=g(), **kw)
    one = rollout_nav(p, [0, 1], generator=g(), rerank=1, **kw)  # one candidate: the same draws, always taken
    for a, b in zip(plain, one):
        np.testing.assert_array_equal(a["path"], b["path"])
        assert b["rejected"] == 0 and 0 <= b["unsafe"] <= b["length"]
    eight = rollout_nav(p, [0, 1], generator=g(), rerank=8, **kw)
    assert all(0 <= e["rejected"] <= 7 * e["length"] for e in eight)
    again = rollout_nav(p, [0, 1], generator=g(), rerank=8, **kw)
    for a, b in zip(eight, again):  # same seed, same episode
        np.testing.assert_array_equal(a["path"], b["path"])
    with pytest.raises(ValueError, match="z0=None"):
        rollout_nav(p, [0], z0=torch.zeros(1, *p.chunk_shape), rerank=4, **kw)
    with pytest.raises(ValueError, match="rerank must be"):
        rollout_nav(p, [0], rerank=-1, **kw)


def test_z2_held_for_the_first_decisions_only(nav_data):
    from steerlab.nav.rollout import rollout_nav

    p = _policy(nav_data)
    z2, z0 = torch.randn(2, p.z2_dim), torch.randn(2, *p.chunk_shape)
    kw = {"env_kwargs": {"max_steps": 3}, "z0": z0}
    held = rollout_nav(p, [0, 1], z2=z2, **kw)
    long = rollout_nav(p, [0, 1], z2=z2, z2_decisions=10, generator=torch.Generator().manual_seed(1), **kw)
    first = rollout_nav(p, [0, 1], z2=z2, z2_decisions=1, generator=torch.Generator().manual_seed(1), **kw)
    per_step = 8 * 1 + 1  # path points of one full decision: the start and 8 sub-steps
    for h, lg, f in zip(held, long, first):
        np.testing.assert_array_equal(h["path"], lg["path"])  # held past the episode's end: unchanged
        np.testing.assert_array_equal(h["path"][:per_step], f["path"][:per_step])  # the first decision is the same
        if h["length"] > 1 and f["length"] > 1:
            assert not np.array_equal(h["path"], f["path"])  # later decisions draw z2 from the prior


def test_candidate_chain_and_worst_candidate_objective(nav_data):
    from steerlab.nav.intent_opt import CandidateChain, CandidateObjective, IntentChain, IntentObjective, make_problem

    p = _policy(nav_data)
    prob = make_problem(p, [0, 1])
    k = 3
    z0 = torch.randn(2 * k, *p.chunk_shape, generator=torch.Generator().manual_seed(0))
    chain = CandidateChain(p, prob, z0, k)
    z2 = torch.randn(2, p.z2_dim, requires_grad=True)
    wp = chain.sample_fn(z2)
    assert wp.shape == (2, k, 8, 2) and chain.nfe == k * IntentChain(p, prob, z0[:2]).nfe
    # candidate j of map i runs the chain with z0[i * k + j]; the per-step noise is drawn for the whole batch, so
    # the first candidate of map 0 is the one a single-map chain reproduces
    first = IntentChain(p, make_problem(p, [0]), z0[:1]).sample_fn(z2[:1].detach())
    torch.testing.assert_close(wp[0, 0].detach(), first[0], atol=1e-5, rtol=1e-4)
    inner = IntentObjective("collision", make_problem(p, [0, 0, 0, 1, 1, 1]))(wp.detach().reshape(-1, 8, 2)).reshape(2, k)
    worst = CandidateObjective("collision", prob, k)(wp.detach())
    torch.testing.assert_close(worst, inner.min(1).values)  # the least colliding candidate
    torch.testing.assert_close(CandidateObjective("collision", prob, k, reduce="mean")(wp.detach()), inner.mean(1))
    route_far = CandidateObjective("goal", prob, k)(wp.detach())
    goal_inner = IntentObjective("goal", make_problem(p, [0, 0, 0, 1, 1, 1]))(wp.detach().reshape(-1, 8, 2)).reshape(2, k)
    torch.testing.assert_close(route_far, goal_inner.max(1).values)  # minimized: the farthest candidate
    CandidateObjective("collision", prob, k, reduce="mean")(wp).sum().backward()
    assert z2.grad is not None and torch.isfinite(z2.grad).all() and z2.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="k = 3 initial noises"):
        CandidateChain(p, prob, z0[:4], k)
    with pytest.raises(ValueError, match="reduce"):
        CandidateObjective("collision", prob, k, reduce="max")


def test_z2_chosen_at_every_decision_by_a_callable(nav_data):
    from steerlab.envs.nav2d import Nav2DEnv
    from steerlab.nav.intent_opt import make_problem, problem_from_envs
    from steerlab.nav.rollout import rollout_nav

    p = _policy(nav_data)
    z2 = torch.randn(2, p.z2_dim)
    kw = {"env_kwargs": {"max_steps": 3}}
    seen = []

    def fn(batch, envs, rows):
        seen.append((len(envs), list(rows), batch["obs_img"].shape[0]))
        return z2[rows]

    a = rollout_nav(p, [0, 1], z2_fn=fn, generator=torch.Generator().manual_seed(2), **kw)
    b = rollout_nav(p, [0, 1], z2=z2, generator=torch.Generator().manual_seed(2), **kw)
    for ea, eb in zip(a, b):  # the same z2 every decision, the same draws: the same episode as a held z2
        np.testing.assert_array_equal(ea["path"], eb["path"])
        assert len(ea["z2_chosen"]) == ea["length"]
    assert seen[0] == (2, [0, 1], 2) and all(n == len(r) == m for n, r, m in seen)
    # with re-ranking, one z2 per candidate: candidate j of an episode gets row j of its block
    k = 3
    per = []
    cand = rollout_nav(p, [0, 1], rerank=k, z2_fn=lambda b, e, r: per.append(torch.randn(len(e) * k, p.z2_dim))
                       or per[-1], generator=torch.Generator().manual_seed(2), **kw)
    assert all(c["z2_chosen"][0].shape == (k, p.z2_dim) for c in cand)
    torch.testing.assert_close(cand[1]["z2_chosen"][0], per[0][k:2 * k])
    seen_z2 = []
    orig = p.predict_action_chunk
    p.predict_action_chunk = lambda *a_, **kw_: seen_z2.append(kw_["z2"]) or orig(*a_, **kw_)
    per.clear()
    rollout_nav(p, [0, 1], rerank=k, z2_fn=lambda b, e, r: per.append(torch.randn(len(e) * k, p.z2_dim)) or per[-1],
                generator=torch.Generator().manual_seed(2), **kw)
    del p.predict_action_chunk
    torch.testing.assert_close(seen_z2[0], per[0])  # the candidates are sampled with exactly these intents
    with pytest.raises(ValueError, match="one per candidate"):
        rollout_nav(p, [0], rerank=k, z2_fn=lambda b, e, r: torch.zeros(2, p.z2_dim), **kw)
    with pytest.raises(ValueError, match="do not also pass"):
        rollout_nav(p, [0], z2_fn=fn, z2=z2[:1], **kw)
    with pytest.raises(ValueError, match="z2_fn must return"):
        rollout_nav(p, [0], z2_fn=lambda b, e, r: torch.zeros(1, p.z2_dim + 1), **kw)
    # at the start state, the problem built from live envs is the one make_problem builds from the seeds
    seeds = [0, 3]
    ref = make_problem(p, seeds)
    envs = []
    for s in seeds:
        env = Nav2DEnv()
        env.reset(seed=s)
        envs.append(env)
    live = problem_from_envs(ref.obs, envs, ref.route_id)
    torch.testing.assert_close(live.state, ref.state)
    torch.testing.assert_close(live.goal, ref.goal)
    torch.testing.assert_close(live.distance_field, ref.distance_field)
    for o_live, o_ref in zip(live.other_route, ref.other_route):
        assert (o_live is None) == (o_ref is None)
        if o_ref is not None:
            np.testing.assert_allclose(o_live, o_ref)


def test_z1_returned_by_the_callable_replaces_the_route_encoding(nav_data):
    from steerlab.nav.rollout import rollout_nav

    p = _policy(nav_data)
    kw = {"env_kwargs": {"max_steps": 3}}
    for k in (0, 3):
        plain = rollout_nav(p, [0, 1], rerank=k, generator=torch.Generator().manual_seed(2), **kw)
        # z1 = the encoding of the route the rollout gives, z2 left to the prior: exactly the plain rollout
        same = rollout_nav(p, [0, 1], rerank=k, generator=torch.Generator().manual_seed(2),
                           z2_fn=lambda b, e, r: (p.encode_z1(b["ref_traj"]), None), **kw)
        for ea, eb in zip(plain, same):  # (the encodings of 2 rows and of 2 * k rows differ by float rounding)
            np.testing.assert_allclose(ea["path"], eb["path"], rtol=0, atol=1e-6)
            assert len(eb["z1_chosen"]) == eb["length"] and "z2_chosen" not in eb
        # another z1 changes the chunks
        moved = rollout_nav(p, [0, 1], rerank=k, generator=torch.Generator().manual_seed(2),
                            z2_fn=lambda b, e, r: (p.encode_z1(b["ref_traj"]) + 3.0, None), **kw)
        assert not np.array_equal(moved[0]["path"], plain[0]["path"])
    # one z1 per candidate reaches the sampler as given, next to the z2 returned with it
    k, seen, per = 3, [], []
    orig = p.predict_action_chunk
    p.predict_action_chunk = lambda *a_, **kw_: seen.append((kw_["z1"], kw_["z2"])) or orig(*a_, **kw_)
    rollout_nav(p, [0, 1], rerank=k, generator=torch.Generator().manual_seed(2), **kw,
                z2_fn=lambda b, e, r: per.append((torch.randn(len(e) * k, p.z1_dim), torch.randn(len(e) * k, p.z2_dim)))
                or per[-1])
    del p.predict_action_chunk
    torch.testing.assert_close(seen[0][0], per[0][0])
    torch.testing.assert_close(seen[0][1], per[0][1])
    with pytest.raises(ValueError, match=r"z1 \[1, 4\]"):
        rollout_nav(p, [0], z2_fn=lambda b, e, r: (torch.zeros(1, p.z1_dim + 1), None), **kw)
    with pytest.raises(ValueError, match="pair"):
        rollout_nav(p, [0], z2_fn=lambda b, e, r: (None, None, None), **kw)
    with pytest.raises(ValueError, match="one coarse intent per observation"):
        p.predict_action_chunk({"obs_img": torch.zeros(1, 2, 32, 32), "obs_state": torch.zeros(1, 2, 6),
                                "goal_rel": torch.zeros(1, 2)}, z1=torch.zeros(2, p.z1_dim))


def test_z1_as_the_chain_variable(nav_data):
    from steerlab.nav.intent_opt import CandidateChain, CandidateObjective, IntentChain, make_problem, two_route_seeds

    p = _policy(nav_data)
    seeds = two_route_seeds(0, 2)
    prob = make_problem(p, seeds)
    g = torch.Generator().manual_seed(0)
    z0, z2 = torch.randn(2, *p.chunk_shape, generator=g), torch.randn(2, p.z2_dim, generator=g)
    by_z2 = IntentChain(p, prob, z0)
    by_z1 = IntentChain(p, prob, z0, variable="z1", z2=z2)
    # at the route's own encoding, the z1 chain is the z2 chain at that z2
    torch.testing.assert_close(by_z1.sample_fn(by_z1.z1), by_z2.sample_fn(z2))
    # the gradient w.r.t. z1 matches central differences (float64 policy, DDIM without clipping)
    pd = _policy(nav_data, sampler="ddim", clip_sample=None, num_inference_steps=4).double()
    prob64 = make_problem(pd, seeds)
    prob64.obs = {k: v.double() for k, v in prob64.obs.items()}
    prob64.state = prob64.state.double()
    ch = IntentChain(pd, prob64, z0.double(), variable="z1", z2=z2.double())
    w = torch.randn(2, 8, 2, generator=g).double()
    f = lambda z: (ch.sample_fn(z) * w).sum()  # noqa: E731
    z1 = ch.z1.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(z1), z1)
    fd, h = torch.zeros_like(z1), 1e-6
    with torch.no_grad():
        for i in range(z1.numel()):
            e = torch.zeros(z1.numel(), dtype=z1.dtype)
            e[i] = h
            fd.view(-1)[i] = (f(z1 + e.view_as(z1)) - f(z1 - e.view_as(z1))) / (2 * h)
    assert grad.abs().max() > 1e-6
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-7)
    # the candidates share one z1, each with its own z2 and noise
    k = 3
    cz0, cz2 = torch.randn(2 * k, *p.chunk_shape, generator=g), torch.randn(2 * k, p.z2_dim, generator=g)
    cand = CandidateChain(p, prob, cz0, k, variable="z1", z2=cz2)
    z1v = cand.z1.clone().requires_grad_(True)
    wp = cand.sample_fn(z1v)
    assert wp.shape == (2, k, 8, 2)
    CandidateObjective("route", prob, k, reduce="mean")(wp).sum().backward()
    assert torch.isfinite(z1v.grad).all() and z1v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="variable must be"):
        IntentChain(p, prob, z0, variable="z3")
    with pytest.raises(ValueError, match="cannot be combined"):
        IntentChain(p, prob, z0, variable="z1", joint=True)
    with pytest.raises(ValueError, match="fixed fine intent"):
        IntentChain(p, prob, z0, z2=z2)


def test_direct_head_starts_as_the_plain_model_and_learns(nav_data):
    """model.direct_head adds an MLP on [observation embedding | intent latent] to the U-Net's output: zero at
    initialization (the same outputs as without it, for the same U-Net weights), trained by the loss, and refused
    with an output other than the clean chunk."""
    import dataclasses

    with pytest.raises(ValueError, match="direct_head.*prediction_type='sample'"):
        NavPolicy(NavPolicyConfig(model=dataclasses.replace(TINY, direct_head=True), prediction_type="epsilon"))
    cfg = dict(prediction_type="sample")
    plain = _policy(nav_data, **cfg)
    torch.manual_seed(0)
    direct = NavPolicy(NavPolicyConfig(model=dataclasses.replace(TINY, direct_head=True, direct_hidden=16), **cfg))
    direct.fit_normalizers(nav_data.data)
    missing, unexpected = direct.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("model.direct_net.") for k in missing)
    g = torch.Generator().manual_seed(0)
    img, state, goal = _obs(3, g)
    cond = plain.model("vision_encoder", obs_img=img, obs_state=state, goal=goal)
    x, t = torch.randn(3, 8, 2, generator=g), torch.tensor([1, 5, 9])
    lat = plain.model.intent.null_latent(3)
    assert torch.equal(plain.model("noise_pred_net", sample=x, timestep=t, global_cond=cond, latent_z=lat),
                       direct.model("noise_pred_net", sample=x, timestep=t, global_cond=cond, latent_z=lat))
    ds = NavWindowDataset.from_episodes(nav_data, TINY.n_obs_steps)
    loss, _ = direct.compute_loss(ds.batch(torch.arange(16)), torch.Generator().manual_seed(1))
    loss.backward()
    assert direct.model.direct_net[-1].weight.grad.abs().sum() > 0

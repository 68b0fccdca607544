"""Persistent training chains of IBC (``IBCConfig.persistent_chains``): off changes nothing, on stores each row's
chain states and continues them with fewer steps, restarts a share of rows, starts new rows from the nearest stored
row of their episode (``persistent_init='neighbour'``), survives a checkpoint round trip, and still learns."""

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import steerlab.ebm.policy as policy_mod
from steerlab.ebm.langevin import langevin
from steerlab.ebm.losses import gradient_penalty, info_nce
from steerlab.ebm.persistent import ChainMemory
from steerlab.ebm.policy import IBCConfig, IBCPolicy, LangevinConfig
from steerlab.train.checkpoint import list_checkpoints, load_trainer_state
from steerlab.train.config import EvalConfig, TrainConfig
from steerlab.train.loop import train

SMALL = dict(width=32, stats_samples=None, langevin=LangevinConfig(num_steps=6))
PERSIST = dict(SMALL, persistent_chains=True, persistent_steps=2, persistent_reinit=0.0)
NEIGHBOUR = dict(PERSIST, persistent_init="neighbour")


def _data(rows=64):
    rng = np.random.default_rng(0)
    return rng.random((rows, 3)).astype(np.float32), rng.random((rows, 2)).astype(np.float32)


def _policy(cfg, episode_ends=None):
    obs, act = _data()
    torch.manual_seed(0)
    pol = IBCPolicy(cfg, 3, 2)
    pol.fit_normalizers({"obs": obs, "action": act}, action_low=np.zeros(2), action_high=np.ones(2),
                        episode_ends=episode_ends)
    return pol


def _batch(index):
    obs, act = _data()
    index = torch.as_tensor(index)
    return {"obs": torch.as_tensor(obs)[index][:, None].repeat(1, 2, 1), "action": torch.as_tensor(act)[index][:, None],
            "index": index}


class RecordChains:
    """Stands in for ``langevin`` in the policy module: runs it and records each call's steps and start states."""

    def __init__(self):
        self.calls = []

    def __call__(self, grad, a, lo, hi, **kw):
        self.calls.append((kw["num_steps"], a.clone()))
        return langevin(grad, a, lo, hi, **kw)


# ---------------------------------------------------------------- off: IBC unchanged
def test_off_is_ibc_whatever_the_persistent_settings():
    """With persistent_chains off, the loss is exactly IBC's (uniform draws, then one K-step chain from the last
    of them, InfoNCE with the positive last, gradient penalty) whatever the other persistent fields and whether the
    batch carries indices."""
    batch = _batch(range(16))
    ref_pol = _policy(IBCConfig(**SMALL))
    g = torch.Generator().manual_seed(5)
    o = ref_pol.obs_features(batch["obs"])
    pos = ref_pol.act_norm.normalize(batch["action"][:, 0])
    neg = ref_pol.uniform_actions((16, 8), g, o.device)
    lc = ref_pol.cfg.langevin
    neg = langevin(ref_pol.grad_energy_fn(o), neg, ref_pol.lo, ref_pol.hi, num_steps=lc.num_steps, generator=g)
    acts = torch.cat([neg, pos[:, None]], 1).requires_grad_(True)
    f = ref_pol.logits(o, acts)
    (grad,) = torch.autograd.grad(f.sum(), acts, create_graph=True)
    ref = info_nce(f[:, -1], f[:, :-1], 1.0).mean() + gradient_penalty(grad, 1.0, "inf", True).mean()

    for cfg in (IBCConfig(**SMALL), IBCConfig(**SMALL, persistent_steps=3, persistent_reinit=0.5)):
        for b in (batch, {k: v for k, v in batch.items() if k != "index"}):
            pol = _policy(cfg)
            loss, metrics = pol.compute_loss(b, torch.Generator().manual_seed(5))
            assert loss.item() == ref.item()
            assert "chain_steps" not in metrics and len(pol.chain_memory) == 0 and pol.training_state() == {}


# ---------------------------------------------------------------- on: the store and the chains
def test_first_visit_runs_full_chains_and_stores_the_counter_examples():
    pol = _policy(IBCConfig(**PERSIST, fraction_langevin_samples=0.5))  # 4 uniform + 4 Langevin counter-examples
    index = torch.tensor([5, 9, 9, 2])
    neg = pol.counter_examples(pol.obs_features(_batch(index)["obs"]), 8, torch.Generator().manual_seed(1),
                               index=index)
    mem = pol.chain_memory
    assert len(mem) == 10 and mem.filled.nonzero().flatten().tolist() == [2, 5, 9]
    assert torch.equal(mem.states[5], neg[0, 4:]) and torch.equal(mem.states[2], neg[3, 4:])
    assert torch.equal(mem.states[9], neg[2, 4:])  # a row twice in the batch keeps its last occurrence
    assert not torch.equal(neg[1, 4:], neg[2, 4:])  # (the two occurrences ran their own noise)


def test_stored_rows_continue_with_persistent_steps(monkeypatch):
    rec = RecordChains()
    monkeypatch.setattr(policy_mod, "langevin", rec)
    pol = _policy(IBCConfig(**PERSIST))
    g = torch.Generator().manual_seed(2)
    loss, m = pol.compute_loss(_batch([0, 1, 2, 3]), g)
    assert [c[0] for c in rec.calls] == [6] and m["persistent_share"] == 0.0 and m["chain_steps"] == 6.0
    stored = pol.chain_memory.states.clone()
    rec.calls.clear()
    _, m = pol.compute_loss(_batch([2, 7, 0, 8]), g)  # rows 2 and 0 were stored, 7 and 8 are new
    (k_new, start_new), (k_old, start_old) = rec.calls
    assert (k_new, start_new.shape[0], k_old, start_old.shape[0]) == (6, 2, 2, 2)
    assert torch.equal(start_old, stored[[2, 0]])  # the continued chains start where the last visit ended
    assert m["persistent_share"] == 0.5 and m["chain_steps"] == 4.0  # (6 + 2) / 2
    assert pol.chain_memory.filled.nonzero().flatten().tolist() == [0, 1, 2, 3, 7, 8]
    assert not torch.equal(pol.chain_memory.states[2], stored[2])  # updated by the second visit


def test_persistent_steps_compress_the_schedule_to_its_endpoints(monkeypatch):
    """A continued chain runs the full chain's schedule from step_size_init to step_size_final over
    persistent_steps steps (not the tail of the K-step schedule): without noise and with a constant gradient,
    two steps move the state by 0.5 * g * (eps_init + eps_final)."""
    lc = LangevinConfig(num_steps=6, noise_scale=0.0, delta_action_clip=None)
    pol = _policy(IBCConfig(**{**PERSIST, "langevin": lc}))
    monkeypatch.setattr(pol, "grad_energy_fn", lambda o: (lambda a: torch.full_like(a, 0.2)))
    index = torch.tensor([3])
    o = pol.obs_features(_batch(index)["obs"])
    pol.chain_memory.write(index, torch.zeros(1, 8, 2))
    out, continued, _ = pol.run_persistent_chains(o, torch.zeros(1, 8, 2), index, torch.Generator().manual_seed(0))
    assert continued.tolist() == [True]
    assert torch.allclose(out, torch.full_like(out, -0.5 * 0.2 * (0.1 + 1e-5)), atol=1e-7)


def test_reinit_restarts_rows_from_uniform_with_the_full_chain(monkeypatch):
    rec = RecordChains()
    monkeypatch.setattr(policy_mod, "langevin", rec)
    rows = torch.arange(64)
    for reinit, lo, hi in [(1.0, 0, 0), (0.5, 20, 44), (0.0, 64, 64)]:
        pol = _policy(IBCConfig(**{**PERSIST, "persistent_reinit": reinit}))
        g = torch.Generator().manual_seed(3)
        o = pol.obs_features(_batch(rows)["obs"])
        pol.counter_examples(o, 8, g, index=rows)  # every row stored
        stored = pol.chain_memory.states.clone()
        rec.calls.clear()
        _, continued, _ = pol.run_persistent_chains(o, pol.uniform_actions((64, 8), g, o.device), rows, g)
        assert lo <= int(continued.sum()) <= hi
        starts = {k: a for k, a in rec.calls}
        if (~continued).any():  # restarted rows: full chain, from the uniform draws (not the stored states)
            assert starts[6].shape[0] == int((~continued).sum())
            assert not torch.isclose(starts[6], stored[~continued]).all(-1).any()
        if continued.any():
            assert torch.equal(starts[2], stored[continued])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"persistent_steps \(7\) must not exceed.*num_steps \(6\)"):
        IBCPolicy(IBCConfig(**{**PERSIST, "persistent_steps": 7}), 3, 2)
    with pytest.raises(ValueError, match="persistent_steps must be >= 1"):
        IBCPolicy(IBCConfig(**{**PERSIST, "persistent_steps": 0}), 3, 2)
    with pytest.raises(ValueError, match="persistent_reinit must be in"):
        IBCPolicy(IBCConfig(**{**PERSIST, "persistent_reinit": 1.5}), 3, 2)
    with pytest.raises(ValueError, match="needs Langevin counter-examples"):
        IBCPolicy(IBCConfig(**PERSIST, fraction_langevin_samples=0.1), 3, 2)  # int(0.1 * 8) = 0
    with pytest.raises(ValueError, match="energy='joint'"):
        IBCPolicy(IBCConfig(**PERSIST, energy="autoregressive", inference="autoregressive_dfo"), 3, 2)
    with pytest.raises(ValueError, match="persistent_init must be 'uniform' or 'neighbour'"):
        IBCPolicy(IBCConfig(**{**PERSIST, "persistent_init": "nearest"}), 3, 2)
    with pytest.raises(ValueError, match="persistent_neighbours must be >= 1"):
        IBCPolicy(IBCConfig(**{**NEIGHBOUR, "persistent_neighbours": 0}), 3, 2)
    IBCPolicy(IBCConfig(**{**SMALL, "persistent_steps": 50}), 3, 2)  # off: not checked against num_steps
    pol = _policy(IBCConfig(**PERSIST))
    with pytest.raises(ValueError, match=r"batch\['index'\]"):
        pol.compute_loss({k: v for k, v in _batch([0, 1]).items() if k != "index"})


# ---------------------------------------------------------------- neighbour starts
def test_nearest_stored_row_is_the_nearest_of_the_same_episode():
    mem = ChainMemory()
    with pytest.raises(ValueError, match="knows no episode boundaries"):
        mem.nearest_stored(torch.tensor([0]), 8)
    mem.set_episodes([5, 12, 20])  # episodes: rows 0-4, 5-11, 12-19
    assert mem.nearest_stored(torch.tensor([0, 7]), 8).tolist() == [-1, -1]  # nothing stored yet
    mem.write(torch.tensor([4, 8, 12, 16]), torch.zeros(4, 2, 1))
    rows = torch.tensor([5, 11, 14, 19, 0, 8, 6, 13, 18])
    assert mem.nearest_stored(rows, 8).tolist() == [
        8,  # row 4, one before, is the previous episode's
        8,  # row 12, one after, is the next episode's
        12,  # rows 12 and 16 are as near: the earlier
        16,  # rows after 16 are beyond the store's end
        4,
        -1,  # the row itself is not its neighbour, and no other row of its episode is stored
        8, 12, 16,
    ]
    assert mem.nearest_stored(rows, 2).tolist() == [-1, -1, 12, -1, -1, -1, 8, 12, 16]
    with pytest.raises(ValueError, match="row 20 lies beyond the 20 rows"):
        mem.nearest_stored(torch.tensor([3, 20]), 8)
    with pytest.raises(ValueError, match="strictly increasing"):
        mem.set_episodes([5, 5, 20])
    back = ChainMemory()  # the episodes are set up from the data, not saved with the states
    back.set_episodes([5, 12, 20])
    back.load_state_dict(mem.state_dict())
    assert torch.equal(back.nearest_stored(rows, 8), mem.nearest_stored(rows, 8))


def test_neighbour_init_continues_the_nearest_stored_chains_of_the_episode(monkeypatch):
    rec = RecordChains()
    monkeypatch.setattr(policy_mod, "langevin", rec)
    pol = _policy(IBCConfig(**NEIGHBOUR), episode_ends=[16, 32, 48, 64])
    g = torch.Generator().manual_seed(2)
    _, m = pol.compute_loss(_batch([3, 15, 20, 7]), g)  # nothing stored yet: full chains from uniform
    assert [c[0] for c in rec.calls] == [6] and m["persistent_share"] == 0.0 and m["neighbour_share"] == 0.0
    stored = pol.chain_memory.states.clone()
    rec.calls.clear()
    # 5: row 3 (rows 3 and 7 are 2 away: the earlier); 16: row 20 (row 15, one before, is the previous episode's);
    # 14: row 15; 40: no stored row in its episode, full chain; 3: its own chains (not row 7's)
    _, m = pol.compute_loss(_batch([5, 16, 14, 40, 3]), g)
    (k_new, start_new), (k_old, start_old) = rec.calls
    assert (k_new, start_new.shape[0], k_old) == (6, 1, 2)
    assert torch.equal(start_old, stored[[3, 20, 15, 3]])
    assert not any(torch.equal(start_new[0], stored[r]) for r in (3, 15, 20))  # from uniform
    assert (m["persistent_share"], m["neighbour_share"], m["chain_steps"]) == pytest.approx((0.8, 0.6, 2.8))
    assert pol.chain_memory.filled.nonzero().flatten().tolist() == [3, 5, 7, 14, 15, 16, 20, 40]
    assert torch.equal(pol.chain_memory.states[[15, 20]], stored[[15, 20]])  # the neighbours' states are kept


def test_neighbour_init_keeps_restarts(monkeypatch):
    """A row drawn for a restart runs the full chain from uniform even where a neighbour is stored."""
    rec = RecordChains()
    monkeypatch.setattr(policy_mod, "langevin", rec)
    even, odd = torch.arange(0, 64, 2), torch.arange(1, 64, 2)
    for reinit, lo, hi in [(1.0, 0, 0), (0.5, 8, 24), (0.0, 32, 32)]:
        pol = _policy(IBCConfig(**{**NEIGHBOUR, "persistent_reinit": reinit}))
        g = torch.Generator().manual_seed(3)
        pol.chain_memory.write(even, pol.uniform_actions((32, 8), g, "cpu"))
        stored = pol.chain_memory.states.clone()
        rec.calls.clear()
        o = pol.obs_features(_batch(odd)["obs"])
        _, continued, neighbour = pol.run_persistent_chains(o, pol.uniform_actions((32, 8), g, o.device), odd, g)
        assert torch.equal(continued, neighbour) and lo <= int(neighbour.sum()) <= hi
        starts = {k: a for k, a in rec.calls}
        if (~neighbour).any():
            assert starts[6].shape[0] == int((~neighbour).sum())
        if neighbour.any():  # row 2i + 1 continues row 2i's chains (one before: the earlier of the two)
            assert torch.equal(starts[2], stored[odd[neighbour] - 1])


def test_neighbour_init_without_neighbours_is_the_uniform_init():
    """With no stored row near enough (every row its own episode), 'neighbour' runs exactly what 'uniform' runs:
    same draws, same chains, same losses and store, restarts included."""
    batches = [[0, 5, 9, 12], [5, 6, 12, 40], [9, 40, 41, 0]]
    runs = []
    for init in ("uniform", "neighbour"):
        pol = _policy(IBCConfig(**{**PERSIST, "persistent_init": init, "persistent_reinit": 0.3}),
                      episode_ends=np.arange(1, 65))
        g = torch.Generator().manual_seed(4)
        runs.append(([pol.compute_loss(_batch(b), g)[0].item() for b in batches], pol.chain_memory.states))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


# ---------------------------------------------------------------- the store itself
def test_chain_memory_grows_reads_unknown_rows_as_unfilled_and_round_trips():
    mem = ChainMemory()
    states, filled = mem.read(torch.tensor([0, 3]), 2, 1)
    assert not filled.any() and not states.any()
    mem.write(torch.tensor([3, 1, 3]), torch.tensor([[[1.0], [1.0]], [[2.0], [2.0]], [[3.0], [3.0]]]))
    assert len(mem) == 4 and mem.filled.tolist() == [False, True, False, True]
    mem.write(torch.tensor([6]), torch.full((1, 2, 1), 4.0))
    states, filled = mem.read(torch.tensor([3, 1, 9, 6, 0]), 2, 1)
    assert filled.tolist() == [True, True, False, True, False]
    assert states[:, 0, 0].tolist() == [3.0, 2.0, 0.0, 4.0, 0.0]
    back = ChainMemory()
    back.load_state_dict({k: v.clone() for k, v in mem.state_dict().items()})
    assert torch.equal(back.states, mem.states) and torch.equal(back.filled, mem.filled)
    back.load_state_dict({})
    assert len(back) == 0 and back.state_dict() == {}
    with pytest.raises(ValueError, match=r"holds \[rows, 2, 1\] states; asked for 3 chains"):
        mem.read(torch.tensor([0]), 3, 1)
    with pytest.raises(ValueError, match="bool filled"):
        back.load_state_dict({"states": mem.states, "filled": mem.filled.float()})


def test_policy_training_state_round_trip_and_not_in_the_weights():
    pol = _policy(IBCConfig(**PERSIST))
    pol.compute_loss(_batch([4, 8]), torch.Generator().manual_seed(0))
    state = pol.training_state()
    assert state["chain_memory"]["filled"].nonzero().flatten().tolist() == [4, 8]
    assert not any("chain" in k or "memory" in k for k in pol.state_dict())  # saved policies do not carry it
    other = _policy(IBCConfig(**PERSIST))
    other.load_training_state(state)
    assert torch.equal(other.chain_memory.states, pol.chain_memory.states)
    with pytest.raises(ValueError, match="unknown IBC training state"):
        other.load_training_state({"buffer": torch.zeros(1)})


# ---------------------------------------------------------------- in the training loop
def _train_cfg(tmp_path, dataset, **kw):
    # 38 of the 40 episodes held out: ~100 training rows, so rows come back within a few steps of batch 16
    policy = IBCConfig(width=32, num_counter_examples=4, inference_samples=16, stats_samples=None,
                       langevin=LangevinConfig(num_steps=5), persistent_chains=True, persistent_steps=2)
    base = dict(preset="test", dataset=str(dataset), policy=policy, steps=12, batch_size=16, log_interval=1,
                ckpt_interval=6, out_dir=str(tmp_path), progress=False, monitor_batch=0, val_episodes=38,
                eval=EvalConfig(episodes=2, batch=2))
    return TrainConfig(**{**base, **kw})


def _metric(run_dir, key):
    with open(Path(run_dir) / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("init", ["uniform", "neighbour"])
def test_checkpoint_holds_the_store_and_resume_continues_exactly(tmp_path, particle2d, monkeypatch, init):
    def cfg(**kw):
        c = _train_cfg(tmp_path, particle2d, **kw)
        return dataclasses.replace(c, policy=dataclasses.replace(c.policy, persistent_init=init))

    full = train(cfg(run_name="full"))
    state = load_trainer_state(list_checkpoints(full)[-1])["policy_training_state"]["chain_memory"]
    assert state["filled"].sum() > 50 and state["states"].shape[1:] == (4, 2)
    assert _metric(full, "persistent_share")[-1] > 0.3  # rows came back and continued their chains
    if init == "neighbour":  # new rows started from their neighbours' chains, from the second step on
        share = _metric(full, "neighbour_share")
        assert share[0] == 0.0 and max(share[1:4]) > 0.3
    part = cfg(run_name="part", steps=6)
    train(part)
    resumed = train(dataclasses.replace(part, steps=12), resume=True)
    assert _metric(full, "loss") == _metric(resumed, "loss")
    # the same resume without restoring the store (rows visited before step 6 start over) gives other losses
    train(dataclasses.replace(part, run_name="lost"))
    monkeypatch.setattr(IBCPolicy, "load_training_state", lambda self, state: None)
    lost = train(dataclasses.replace(part, run_name="lost", steps=12), resume=True)
    assert _metric(lost, "loss")[6:] != _metric(full, "loss")[6:]


def test_persistent_chains_learn_a_known_mapping():
    """The 1-D task of test_ibc_learns (action = (o, 1 - o)) with persistent chains: 2,000 rows, batch 64, 300
    steps, so each row is visited about ten times and most chains run 3 steps instead of 15."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    obs = rng.random((2000, 1)).astype(np.float32)
    act = np.concatenate([obs, 1 - obs], 1)
    cfg = IBCConfig(width=64, depth=2, n_obs_steps=1, stats_samples=None, num_counter_examples=16,
                    langevin=LangevinConfig(num_steps=15), inference_samples=128, persistent_chains=True,
                    persistent_steps=3)
    pol = IBCPolicy(cfg, 1, 2)
    pol.fit_normalizers({"obs": obs, "action": act}, action_low=np.zeros(2), action_high=np.ones(2))
    opt = torch.optim.Adam(pol.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    pol.train()
    losses, shares = [], []
    for _ in range(300):
        idx = torch.randint(2000, (64,), generator=g)
        batch = {"obs": torch.as_tensor(obs[idx])[:, None], "action": torch.as_tensor(act[idx])[:, None], "index": idx}
        loss, m = pol.compute_loss(batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        shares.append(m["persistent_share"])
    assert np.mean(shares[-50:]) > 0.9 and np.mean(shares[:5]) < 0.2
    assert np.mean(losses[-50:]) < np.mean(losses[:10]) - 0.3
    pol.eval()
    test = torch.linspace(0.05, 0.95, 16)[:, None]
    pred = pol.predict_action_chunk(test[:, None], torch.Generator().manual_seed(1))[:, 0]
    mse = float(((pred - torch.cat([test, 1 - test], 1)) ** 2).mean())
    assert mse < 0.004, f"inferred actions off by rmse {mse ** 0.5:.3f}"  # untrained: ~0.1-0.3
    assert m["e_pos"] < m["e_neg"]

"""Rollout code and metrics: the oracle, run through the same vectorized rollout as every policy,
must succeed; the Wilson interval matches hand-computed values."""

import numpy as np
import pytest
import torch

from steerlab.eval.metrics import wilson_interval
from steerlab.eval.rollout import rollout
from steerlab.policy import Policy


class FlatOracle(Policy):
    """IBC's oracle written against the flat observation [pos_agent, g0, g1, vel] (batched)."""

    n_obs_steps = 2

    def __init__(self, n_dim):
        super().__init__()
        self.n = n_dim
        self.switched = None

    def predict_action_chunk(self, obs, generator=None):
        o = obs[:, -1]
        x, g0, g1 = o[:, : self.n], o[:, self.n : 2 * self.n], o[:, 2 * self.n : 3 * self.n]
        if self.switched is None:
            self.switched = torch.zeros(len(o), dtype=torch.bool)
        self.switched |= (x - g0).norm(dim=1) < 0.01
        return torch.where(self.switched[:, None], g1, g0)[:, None]


@pytest.mark.parametrize("n_dim", [1, 2, 16])
def test_oracle_through_vectorized_rollout_succeeds(n_dim):
    eps = rollout(FlatOracle(n_dim), "particle", n_dim, seeds=list(range(20)))
    assert sum(e["success"] for e in eps) >= 19
    assert all(e["length"] == 50 and e["positions"].shape == (51, n_dim) for e in eps)
    assert all(e["return"] == (1.0 if e["success"] else e["return"]) for e in eps)


def test_rollout_same_seeds_same_episodes():
    a = rollout(FlatOracle(2), "particle", 2, seeds=[3, 4])
    b = rollout(FlatOracle(2), "particle", 2, seeds=[3, 4])
    assert all(np.array_equal(x["positions"], y["positions"]) for x, y in zip(a, b))


def test_wilson_interval_golden():
    lo, hi = wilson_interval(8, 10)  # p=0.8, z=1.96: center 0.71674, half-width 0.22658
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(0, 50) == pytest.approx((0.0, 0.07135), abs=1e-4)  # z^2 / (n + z^2)
    assert wilson_interval(100, 100)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)

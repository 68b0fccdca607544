"""Implicit behavioural cloning (IBC) policies: an energy network, InfoNCE training with
counter-examples, and Langevin / DFO / autoregressive-DFO inference.

Energy sign: the network outputs a logit ``f(o, a)``; the energy is ``E = -f``; lower energy = better.
All action tensors inside the policy live in the normalized space ``[-1, 1]`` (min-max over the data);
observations are z-scored per feature (std floored at float32 eps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from steerlab.data.normalize import MinMax, ZScore, sampling_bounds
from steerlab.ebm.dfo import autoregressive_dfo, dfo
from steerlab.ebm.langevin import langevin
from steerlab.ebm.losses import gradient_penalty, info_nce
from steerlab.ebm.persistent import ChainMemory
from steerlab.hw import native_bf16
from steerlab.nets.made import MaskedARMLP, harmonic_counts
from steerlab.nets.mlp import MLPPlain, MLPResNet
from steerlab.policy import Policy
from steerlab.registry import register_policy


def counter_example_split(n: int, fraction_langevin: float) -> tuple[int, int]:
    """``(uniform, langevin)`` counts of ``n`` counter-examples, as IBC's agent splits them: the Langevin count
    is truncated, ``int(fraction * n)``, and what truncation leaves over goes to the uniform samples
    (n = 8, fraction 0.7: 3 uniform, 5 Langevin)."""
    n_lang = int(fraction_langevin * n)
    return n - n_lang, n_lang


def shared_cuts(n: int, act_dim: int) -> torch.Tensor:
    """The cuts ``j_k`` of ``n`` shared autoregressive counter-examples over ``act_dim`` dimensions, sorted: counts
    proportional to ``1 / (j + 1)`` (largest remainders), so head m is served by a share ``H(m+1) / H(A)`` of them
    (``H`` the harmonic numbers) and head 0, the worst served, by ``1 / H(A)`` (A = 16: 30%)."""
    return harmonic_counts(n, act_dim)


def _check_persistent(cfg: "IBCConfig") -> None:
    """Errors for persistent-chain settings out of range, or (with ``persistent_chains``) inconsistent with the
    rest of the config."""
    if cfg.persistent_init not in ("uniform", "neighbour"):
        raise ValueError(f"persistent_init must be 'uniform' or 'neighbour', got {cfg.persistent_init!r}")
    if cfg.persistent_neighbours < 1:
        raise ValueError(f"persistent_neighbours must be >= 1, got {cfg.persistent_neighbours}")
    if cfg.persistent_steps < 1:
        raise ValueError(f"persistent_steps must be >= 1, got {cfg.persistent_steps}")
    if not 0.0 <= cfg.persistent_reinit <= 1.0:
        raise ValueError(f"persistent_reinit must be in [0, 1], got {cfg.persistent_reinit}")
    if not cfg.persistent_chains:
        return
    if cfg.persistent_steps > cfg.langevin.num_steps:
        raise ValueError(f"persistent_steps ({cfg.persistent_steps}) must not exceed the full chain's "
                         f"langevin.num_steps ({cfg.langevin.num_steps}): a continued chain is the shorter one")
    if cfg.energy != "joint":
        raise ValueError("persistent_chains needs energy='joint': the autoregressive energy trains with uniform "
                         "counter-examples only")
    if counter_example_split(cfg.num_counter_examples, cfg.fraction_langevin_samples)[1] == 0:
        raise ValueError(f"persistent_chains needs Langevin counter-examples, but int(fraction_langevin_samples "
                         f"{cfg.fraction_langevin_samples} x num_counter_examples {cfg.num_counter_examples}) is 0")


@dataclass(frozen=True)
class LangevinConfig:
    """IBC's Langevin chain (``agents/mcmc.py`` defaults, with the particle configs' 100 steps)."""

    num_steps: int = 100
    """chain length K"""
    step_size_init: float = 0.1
    """ε at k = 0"""
    step_size_final: float = 1e-5
    """ε at k = K - 1"""
    power: float = 2.0
    """polynomial schedule exponent"""
    noise_scale: float = 1.0
    """σ multiplying the Gaussian noise"""
    delta_action_clip: float | None = 0.1
    """clip of the full step as a fraction of half the action range (None: no clip)"""
    grad_clip: float | None = None
    """clip of dE/da before the step (None: no clip)"""
    form: Literal["ibc", "ula"] = "ibc"
    """'ibc': d = ε(0.5∇E + σξ) as in the reference; 'ula': textbook a - ε∇E + √(2ε)σξ"""


@dataclass(frozen=True)
class IBCConfig:
    """Every hyper-parameter of an IBC policy. Defaults: the repo's ``particle/mlp_ebm_langevin.gin``."""

    kind: Literal["ibc"] = "ibc"
    layers: Literal["resnet", "mlp"] = "resnet"
    """energy network layers: 'resnet' (IBC's ResNetPreActivation, the Langevin configs) or 'mlp' (IBC's
    MLPDropout: plain ReLU layers, the repo's particle DFO config)"""
    width: int = 256
    """hidden width of the energy MLP"""
    depth: int = 2
    """dense layers: in the residual stack for 'resnet' (even; 2 = one block), hidden layers for 'mlp'"""
    dropout: float = 0.0
    """dropout rate after each activation of the energy network"""
    spectral_norm: bool = False
    """spectral normalization on every dense layer (IBC's DenseSN: one power iteration per call, u stored in
    training mode, so twice per training step with the gradient penalty)"""
    n_obs_steps: int = 2
    """observation history length (IBC sequence_length)"""
    energy: Literal["joint", "autoregressive"] = "joint"
    """'joint': one E(o, a); 'autoregressive': one head per action dimension E^j(o, a_0..j) (paper Alg. 2)"""
    num_counter_examples: int = 8
    """counter-examples per positive"""
    fraction_langevin_samples: float = 1.0
    """fraction of the counter-examples refined by a Langevin chain: int(fraction·n) of them, the rest stay uniform
    (IBC's split, see counter_example_split)"""
    uniform_warmup_steps: int = 0
    """train the first this-many steps with uniform counter-examples only (as the DFO config), then with
    ``fraction_langevin_samples``; not in IBC (0 = off): uniform steps cost a few per cent of a Langevin step"""
    persistent_chains: bool = False
    """training counter-examples from persistent chains (not in IBC; as persistent contrastive divergence): each
    dataset row's Langevin counter-examples are stored, and the row's next visit continues its chains from them for
    ``persistent_steps`` steps instead of starting uniform and running ``langevin.num_steps``. A row not visited
    before, or drawn for a restart (``persistent_reinit``), starts uniform and runs the full chain. Needs the
    batch's dataset rows (``batch["index"]``, added by the training loop); the store is saved in checkpoints
    (``trainer.pt``) and restored on ``--resume``. Off: IBC's counter-examples, unchanged"""
    persistent_steps: int = 10
    """Langevin steps of a chain that continues from its row's stored state; they follow the full chain's
    polynomial schedule compressed to this many steps (from ``step_size_init`` to ``step_size_final``), so each
    visit can move the stored samples as far as the full chain's first steps and ends as finely as its last"""
    persistent_reinit: float = 0.05
    """probability that a visited row restarts from uniform samples with the full chain (per row and visit), which
    keeps counter-examples in regions the stored chains have left"""
    persistent_init: Literal["uniform", "neighbour"] = "uniform"
    """how a row with no stored chains of its own starts: 'uniform', from uniform samples with the full chain;
    'neighbour', from the stored chains of the nearest stored row of its episode (at most ``persistent_neighbours``
    rows before or after it: adjacent windows have nearly the same observation and actions), continued for
    ``persistent_steps`` steps as a revisited row's, and from uniform with the full chain only when no row that near
    is stored. A row drawn for a restart (``persistent_reinit``) starts uniform either way. The episodes come from
    ``fit_normalizers``' ``episode_ends`` (the training windows are one per step, in order)"""
    persistent_neighbours: int = 8
    """with ``persistent_init='neighbour'``: how many rows before and after a row its nearest stored row is
    searched"""
    temperature: float = 1.0
    """InfoNCE softmax temperature"""
    langevin: LangevinConfig = field(default_factory=LangevinConfig)
    """chain used for training counter-examples and for Langevin inference"""
    grad_penalty: bool = True
    """add IBC's gradient penalty at the final chain samples and the positive"""
    grad_margin: float = 1.0
    grad_norm: Literal["inf", "1", "2"] = "inf"
    grad_penalty_square: bool = True
    grad_penalty_weight: float = 1.0
    ar_network: Literal["prefix_mask", "made"] = "prefix_mask"
    """autoregressive energy network: 'prefix_mask', one MLP with A outputs whose action input is [a * m_j, m_j]
    (the prefix mask m_j of the head asked; a pass gives one head); 'made', masked layers (steerlab.nets.made:
    output j depends on a_0..j only by construction; a pass gives every head). 'made' uses IBC's plain layers"""
    ar_train_heads: Literal["all", "random", "shared"] = "all"
    """autoregressive energy: train every head j on every row each step, as the paper's one model per dimension
    ('all', cost x action dims), one random head per row ('random', each head sees 1/A of the rows), or ('shared',
    needs ar_network='made') score one set of counter-examples per row with every head in one pass: counter-example
    k changes the demonstration from dimension j_k on (dimension j_k only, or the prefix 0..j_k, alternately), and
    head m's InfoNCE term uses those with j_k <= m (the others equal the demonstration on a_0..m); the cuts j_k are
    spread with weights 1 / (j + 1), so low heads, which fewer counter-examples serve, still get some"""
    inference: Literal["langevin", "dfo", "autoregressive_dfo"] = "langevin"
    """action inference; 'autoregressive_dfo' requires energy='autoregressive'"""
    inference_samples: int = 512
    """samples (chains) per observation at inference"""
    inference_langevin_steps: int | None = None
    """Langevin steps at inference (None: the training chain's num_steps, as IBC uses one setting for both)"""
    optimize_again: bool = False
    """IBC's second Langevin chain from the first chain's samples"""
    again_step_size_init: float = 0.1
    again_step_size_final: float = 1e-5
    dfo_iterations: int = 3
    dfo_noise_std: float = 0.33
    dfo_noise_shrink: float = 0.5
    dfo_temperature: float = 1.0
    """softmax temperature of the DFO / autoregressive-DFO resampling at inference (IBC's policy calls
    iterative_dfo with its default 1.0, whatever the InfoNCE ``temperature``)"""
    chain_dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """compute dtype of the Langevin chains' matrix products (bfloat16: 1.4-2x faster on CPUs with
    native bf16 units, many times slower on CPUs without; 'auto': bfloat16 only where the CPU has native
    bf16, see steerlab.hw.native_bf16). The loss, the final selection and the actions stay float32."""
    stats_samples: int | None = 5000
    """windows used to compute normalizer statistics (IBC: 5,000); None: all"""
    obs_std_eps: float = 0.0
    """observation dimensions whose standard deviation is below this are shifted, not scaled; 0 (IBC's rule):
    floored at float32 epsilon only. The MetaWorld presets use 1e-4: a MuJoCo quaternion constant in the demos
    jitters by ~1e-6 in evaluation, which the epsilon floor would turn into tens of normalized units"""
    bounds_margin: float = 0.05
    """sampling bounds = data range ± margin·range, clipped to the env bounds"""


@register_policy("ibc", IBCConfig)
class IBCPolicy(Policy):
    """An implicit policy ``argmin_a E(o, a)`` with ``E = -f``, ``f`` an :class:`MLPResNet`
    (or, with ``layers='mlp'``, an :class:`MLPPlain`)."""

    def __init__(self, cfg: IBCConfig, obs_dim: int, act_dim: int):
        super().__init__()
        if cfg.inference == "autoregressive_dfo" and cfg.energy != "autoregressive":
            raise ValueError("inference='autoregressive_dfo' needs energy='autoregressive'")
        if cfg.energy == "autoregressive" and cfg.inference != "autoregressive_dfo":
            raise ValueError("energy='autoregressive' is sampled with inference='autoregressive_dfo'")
        if cfg.ar_network not in ("prefix_mask", "made"):
            raise ValueError(f"ar_network must be 'prefix_mask' or 'made', got {cfg.ar_network!r}")
        if cfg.ar_network == "made" and cfg.layers != "mlp":
            raise ValueError("ar_network='made' is built of IBC's plain layers: set layers='mlp'")
        if cfg.ar_train_heads == "shared" and cfg.ar_network != "made":
            raise ValueError("ar_train_heads='shared' scores every head in one pass: it needs ar_network='made'")
        if not 0.0 <= cfg.fraction_langevin_samples <= 1.0:
            raise ValueError(f"fraction_langevin_samples must be in [0, 1], got {cfg.fraction_langevin_samples}")
        if cfg.uniform_warmup_steps < 0:
            raise ValueError(f"uniform_warmup_steps must be >= 0, got {cfg.uniform_warmup_steps}")
        if cfg.chain_dtype not in ("float32", "bfloat16", "auto"):
            raise ValueError(f"chain_dtype must be 'float32', 'bfloat16' or 'auto', got {cfg.chain_dtype!r}")
        _check_persistent(cfg)
        self.cfg = cfg
        self.chain_memory = ChainMemory()  # the persistent chains' states (training state, not in the state_dict)
        self.chain_dtype = cfg.chain_dtype
        if cfg.chain_dtype == "auto":
            self.chain_dtype = "bfloat16" if native_bf16() else "float32"
        self.runtime_info = {"chain_dtype": self.chain_dtype}
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.n_obs_steps = cfg.n_obs_steps
        self.n_action_steps = 1
        head_dim = obs_dim * cfg.n_obs_steps
        ar = cfg.energy == "autoregressive"
        net_cls = {"resnet": MLPResNet, "mlp": MLPPlain}.get(cfg.layers)
        if net_cls is None:
            raise ValueError(f"layers must be 'resnet' or 'mlp', got {cfg.layers!r}")
        if ar and cfg.ar_network == "made":
            if cfg.spectral_norm:
                raise ValueError("ar_network='made' has no spectral normalization")
            self.net = MaskedARMLP(head_dim, act_dim, width=cfg.width, depth=cfg.depth, dropout=cfg.dropout)
        else:
            self.net = net_cls(
                head_dim + (2 * act_dim if ar else act_dim),
                out_dim=act_dim if ar else 1,
                width=cfg.width,
                depth=cfg.depth,
                dropout=cfg.dropout,
                spectral_norm=cfg.spectral_norm,
            )
        self.obs_norm = ZScore(obs_dim)
        self.act_norm = MinMax(act_dim)
        self.register_buffer("lo", -torch.ones(act_dim))  # normalized sampling bounds
        self.register_buffer("hi", torch.ones(act_dim))
        self.register_buffer("env_low", torch.zeros(act_dim))
        self.register_buffer("env_high", torch.ones(act_dim))

    # ------------------------------------------------------------------ normalizers
    def fit_normalizers(self, data, *, action_low=None, action_high=None, episode_ends=None, seed: int = 0):
        """Fit IBC's normalizers and sampling bounds from raw ``data["obs"] [T, Do]`` and ``data["action"] [T, A]``."""
        n = self.cfg.stats_samples
        self.set_action_bounds(action_low, action_high)
        self.obs_norm = ZScore.fit(data["obs"], n, seed, std_eps=self.cfg.obs_std_eps)
        self.act_norm = MinMax.fit(data["action"], n, seed)
        lo, hi = sampling_bounds(self.act_norm.lo.numpy(), self.act_norm.hi.numpy(), action_low, action_high,
                                 self.cfg.bounds_margin)
        self.lo.copy_(self.act_norm.normalize(torch.as_tensor(lo, dtype=torch.float32)))
        self.hi.copy_(self.act_norm.normalize(torch.as_tensor(hi, dtype=torch.float32)))
        if self.cfg.persistent_chains and self.cfg.persistent_init == "neighbour":
            # the training rows' episodes (a row per step of ``data``), for chains started from a neighbouring row's
            self.chain_memory.set_episodes(episode_ends if episode_ends is not None else [len(data["action"])])

    def obs_features(self, obs: torch.Tensor) -> torch.Tensor:
        """The energy network's observation input: raw ``[B, n_obs, Do]`` -> normalized flat ``[B, n_obs * Do]``
        (the ``o`` of :meth:`logits`, :meth:`grad_energy_fn` and :meth:`infer_normalized`)."""
        self.check_obs(obs, self.obs_dim)
        return self.obs_norm.normalize(obs).flatten(1)

    # ------------------------------------------------------------------ energies
    def logits(self, o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Joint energy logits ``f(o [B, Dh], a [B, N, A]) -> [B, N]`` (normalized units)."""
        return self.net.forward_split(o, a)[..., 0]

    def _ar_input(self, a: torch.Tensor, j: int | torch.Tensor) -> torch.Tensor:
        dims = torch.arange(self.act_dim, device=a.device)
        j = torch.as_tensor(j, device=a.device)
        mask = (dims <= j[..., None]).to(a.dtype)  # [A] or [B, A]
        if mask.dim() == 2:
            mask = mask[:, None, :]
        mask = mask.expand_as(a)
        return torch.cat([a * mask, mask], dim=-1)

    def ar_logits(self, o: torch.Tensor, a: torch.Tensor, j: int | torch.Tensor) -> torch.Tensor:
        """Autoregressive head ``j`` (int, or ``[B]`` per row) on the prefix ``a[..., :j+1]`` -> ``[B, N]``."""
        made = self.cfg.ar_network == "made"
        out = self.net.forward_split(o, a if made else self._ar_input(a, j))  # [B, N, A]
        j = torch.as_tensor(j, device=a.device)
        if j.dim() == 0:
            return out[..., int(j)]
        return torch.gather(out, 2, j[:, None, None].expand(-1, out.shape[1], 1))[..., 0]

    def energy(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``E(o, a) = -f`` for raw ``obs [B, n_obs, Do]`` and raw ``action [B, N, A]`` -> ``[B, N]``."""
        o = self.obs_features(obs)
        a = self.act_norm.normalize(action)
        if self.cfg.energy == "autoregressive":
            return -self.ar_logits(o, a, self.act_dim - 1)
        return -self.logits(o, a)

    def grad_energy_fn(self, o: torch.Tensor):
        """``a -> dE/da`` at the observation features ``o [B, Dh]`` (:meth:`obs_features`) for normalized actions
        ``a [B, N, A]``, with the hand-written backward of the MLP (no autograd) in the policy's ``chain_dtype``: the
        gradient the Langevin chains (:func:`~steerlab.ebm.langevin.langevin`) descend."""
        dt = torch.bfloat16 if self.chain_dtype == "bfloat16" else None
        return lambda a: -self.net.input_grad(o, a, dtype=dt)[1]

    def uniform_actions(self, shape, generator, device) -> torch.Tensor:
        """Normalized actions ``[*shape, A]`` drawn uniformly over the sampling bounds ``[lo, hi]`` (the uniform
        counter-examples and the initial points of the Langevin chains)."""
        u = torch.rand(*shape, self.act_dim, generator=generator, device=device)
        return self.lo + (self.hi - self.lo) * u

    # ------------------------------------------------------------------ training
    def counter_examples(self, o: torch.Tensor, n: int, generator: torch.Generator | None,
                         fraction_langevin: float | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        """Detached counter-examples ``[B, n, A]`` drawn uniformly over the sampling bounds, the last
        :func:`counter_example_split` ``(n, fraction_langevin)[1]`` of them (default fraction: the config's
        ``fraction_langevin_samples``) refined by a Langevin chain, as IBC's ``_make_counter_example_actions``
        lays them out (uniform first, Langevin last). With ``persistent_chains`` the chains of the dataset rows
        ``index [B]`` continue from their stored states (:meth:`run_persistent_chains`)."""
        return self._counter_examples(o, n, generator, fraction_langevin, index)[0]

    def _counter_examples(self, o, n, generator, fraction_langevin, index):
        """``(counter-examples, chains)``: ``chains`` is :meth:`run_persistent_chains`' ``(continued, neighbour)``
        (None without persistent chains, or when no chain ran)."""
        if self.cfg.persistent_chains and index is None:
            raise ValueError("persistent_chains needs the dataset row of each batch element, batch['index'] [B] "
                             "(steerlab's training loop adds it)")
        neg = self.uniform_actions((o.shape[0], n), generator, o.device)
        frac = self.cfg.fraction_langevin_samples if fraction_langevin is None else fraction_langevin
        n_uni, n_lang = counter_example_split(n, frac)
        chains = None
        if n_lang > 0 and self.cfg.energy == "joint":
            with torch.no_grad():
                if self.cfg.persistent_chains:
                    refined, *chains = self.run_persistent_chains(o, neg[:, n_uni:], index, generator)
                else:
                    refined = self._training_chain(o, neg[:, n_uni:], self.cfg.langevin.num_steps, generator)
            neg = torch.cat([neg[:, :n_uni], refined], dim=1)
        return neg.detach(), chains

    def _training_chain(self, o, a, num_steps: int, generator):
        """The training Langevin chain (``cfg.langevin``) of ``num_steps`` steps from ``a [B, N, A]`` at ``o``."""
        lc = self.cfg.langevin
        return langevin(
            self.grad_energy_fn(o),
            a,
            self.lo,
            self.hi,
            num_steps=num_steps,
            step_size_init=lc.step_size_init,
            step_size_final=lc.step_size_final,
            power=lc.power,
            noise_scale=lc.noise_scale,
            delta_action_clip=lc.delta_action_clip,
            grad_clip=lc.grad_clip,
            form=lc.form,
            generator=generator,
        )

    @torch.no_grad()
    def run_persistent_chains(self, o: torch.Tensor, uniform: torch.Tensor, index: torch.Tensor,
                              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Persistent Langevin chains of the rows ``index [B]`` at observations ``o [B, Dh]``: returns the final
        states ``[B, N, A]`` (stored as the rows' new states), ``continued [B]`` (the rows that continued stored
        states, their own or a neighbour's: all but those that ran the full chain) and ``neighbour [B]`` (those
        that continued a neighbour's).

        A row with stored states continues from them for ``persistent_steps`` steps (the polynomial schedule
        compressed to that length: ``langevin_step_size(k, persistent_steps)``) unless a uniform draw below
        ``persistent_reinit`` restarts it. A row never stored, with ``persistent_init='neighbour'``, continues the
        stored states of its nearest stored row in the same episode at most ``persistent_neighbours`` rows away
        (:meth:`ChainMemory.nearest_stored`, as the memory was before this batch) the same way, unless the same draw
        restarts it. A restarted row, or one with nothing to continue, runs the full ``num_steps`` chain from
        ``uniform [B, N, A]``. The restart draws (``torch.rand(B)``, only when ``persistent_reinit > 0``) come
        from ``generator`` first, then the noise of the full chains, then that of the continued ones."""
        cfg, memory = self.cfg, self.chain_memory
        stored, continued = memory.read(index, uniform.shape[1], self.act_dim)
        keep = None
        if cfg.persistent_reinit > 0:
            keep = torch.rand(index.shape[0], generator=generator, device=o.device) >= cfg.persistent_reinit
        neighbour = torch.zeros_like(continued)
        if cfg.persistent_init == "neighbour":
            near = memory.nearest_stored(index, cfg.persistent_neighbours)
            neighbour = ~continued & (near >= 0)
            if neighbour.any():
                stored[neighbour] = memory.read(near[neighbour], uniform.shape[1], self.act_dim)[0]
        continued = continued | neighbour
        if keep is not None:
            continued, neighbour = continued & keep, neighbour & keep
        out = uniform.clone()
        for rows, start, steps in ((~continued, uniform, cfg.langevin.num_steps),
                                   (continued, stored, cfg.persistent_steps)):
            if rows.any():
                out[rows] = self._training_chain(o[rows], start[rows], steps, generator)
        memory.write(index, out)
        return out, continued, neighbour

    def training_state(self) -> dict:
        """The persistent chains' store (``{}`` while empty or off), saved in every checkpoint's ``trainer.pt``."""
        memory = self.chain_memory.state_dict()
        return {"chain_memory": memory} if memory else {}

    def load_training_state(self, state: dict) -> None:
        unknown = set(state) - {"chain_memory"}
        if unknown:
            raise ValueError(f"unknown IBC training state {sorted(unknown)}; expected 'chain_memory'")
        self.chain_memory.load_state_dict(state.get("chain_memory", {}), device=self.lo.device)

    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None, step: int = 0):
        cfg = self.cfg
        o = self.obs_features(batch["obs"])
        pos = self.act_norm.normalize(batch["action"][:, 0])  # [B, A]
        if cfg.energy == "autoregressive":
            return self._ar_loss(o, pos, generator)
        warm = step < cfg.uniform_warmup_steps
        neg, chains = self._counter_examples(o, cfg.num_counter_examples, generator, 0.0 if warm else None,
                                             batch.get("index"))
        acts = torch.cat([neg, pos[:, None]], dim=1)  # positive last, as IBC
        if cfg.grad_penalty:
            acts = acts.requires_grad_(True)
        f = self.logits(o, acts)  # [B, n+1]
        nce = info_nce(f[:, -1], f[:, :-1], cfg.temperature)
        loss = nce.mean()
        metrics = {"info_nce": nce.mean().item()}
        if cfg.grad_penalty:
            f_gp = f
            if cfg.spectral_norm or cfg.dropout > 0:
                # IBC computes the penalty in a second training-mode forward pass: it runs the spectral-norm power
                # iteration (and stores u) once more and draws new dropout masks. Without either, that pass equals
                # the first, whose graph is reused.
                acts = acts.detach().requires_grad_(True)
                f_gp = self.logits(o, acts)
            (g,) = torch.autograd.grad(f_gp.sum(), acts, create_graph=True)
            gp = gradient_penalty(g, cfg.grad_margin, cfg.grad_norm, cfg.grad_penalty_square).mean()
            loss = loss + cfg.grad_penalty_weight * gp
            metrics["grad_penalty"] = gp.item()
        e = -f.detach()
        metrics.update(e_pos=e[:, -1].mean().item(), e_neg=e[:, :-1].mean().item(), loss=loss.item())
        if cfg.uniform_warmup_steps:
            metrics["uniform_warmup"] = float(warm)
        if cfg.persistent_chains:  # the share of rows that continued stored chains (their own or, with
            # persistent_init='neighbour', a neighbour's: neighbour_share), mean Langevin steps per chain
            continued, neighbour = chains if chains is not None else (None, None)
            share = 0.0 if continued is None else continued.float().mean().item()
            steps = 0.0 if continued is None else (1 - share) * cfg.langevin.num_steps + share * cfg.persistent_steps
            metrics.update(persistent_share=share, chain_steps=steps)
            if cfg.persistent_init == "neighbour":
                metrics["neighbour_share"] = 0.0 if neighbour is None else neighbour.float().mean().item()
        return loss, metrics

    def _ar_loss(self, o, pos, generator):
        """Per row every head j (or one random head j, ``ar_train_heads``). Half the counter-examples replace dimension j of the positive by uniform
        values (head j learns the conditional of a_j given the demonstrated prefix); the other half replace the
        whole prefix a_0..j (head j also ranks prefixes). Autoregressive DFO resamples whole samples by head j,
        prefixes included, and picks the final action by the last head, so a head that never saw a wrong prefix
        extrapolates there and selects off-data prefixes (seen on the test task: rmse 0.4 on 2 of 5 seeds)."""
        cfg = self.cfg
        if cfg.ar_train_heads == "shared":
            return self._ar_loss_shared(o, pos, generator)
        if cfg.ar_train_heads == "all":  # row r of the batch becomes rows r*A .. r*A + A-1, one per head
            j = torch.arange(self.act_dim, device=pos.device).repeat(pos.shape[0])
            o, pos = o.repeat_interleave(self.act_dim, 0), pos.repeat_interleave(self.act_dim, 0)
        elif cfg.ar_train_heads == "random":
            j = torch.randint(self.act_dim, (pos.shape[0],), generator=generator, device=pos.device)
        else:
            raise ValueError(f"ar_train_heads must be 'all' or 'random', got {cfg.ar_train_heads!r}")
        b, n = pos.shape[0], cfg.num_counter_examples
        neg = pos[:, None, :].repeat(1, n, 1)
        u = self.uniform_actions((b, n), generator, pos.device)
        dims = torch.arange(self.act_dim, device=pos.device)
        only_j = (dims[None, :] == j[:, None])[:, None, :].expand(b, n - n // 2, -1)
        prefix = (dims[None, :] <= j[:, None])[:, None, :].expand(b, n // 2, -1)
        neg = torch.where(torch.cat([only_j, prefix], 1), u, neg)
        f = self.ar_logits(o, torch.cat([neg, pos[:, None]], 1), j)
        nce = info_nce(f[:, -1], f[:, :-1], cfg.temperature)
        e = -f.detach()
        loss = nce.mean()
        return loss, {"info_nce": loss.item(), "e_pos": e[:, -1].mean().item(), "e_neg": e[:, :-1].mean().item(),
                      "loss": loss.item()}

    def _ar_loss_shared(self, o, pos, generator):
        """Every head on one set of counter-examples per row, in one pass of the masked network (see
        ``ar_train_heads``). Head m's InfoNCE is over the positive and the counter-examples whose cut j_k <= m."""
        cfg, a_dim = self.cfg, self.act_dim
        b, n = pos.shape[0], cfg.num_counter_examples
        cuts = shared_cuts(n, a_dim).to(pos.device)  # [n]
        dims = torch.arange(a_dim, device=pos.device)
        prefix = (torch.arange(n, device=pos.device) % 2 == 1)[:, None]
        changed = torch.where(prefix, dims[None, :] <= cuts[:, None], dims[None, :] == cuts[:, None])  # [n, A]
        u = self.uniform_actions((b, n), generator, pos.device)
        neg = torch.where(changed[None], u, pos[:, None, :].expand(b, n, a_dim))
        f = self.net.forward_split(o, torch.cat([neg, pos[:, None]], 1)) / cfg.temperature  # [B, n+1, A]
        valid = cuts[:, None] <= dims[None, :]  # [n, A]: counter-example k serves head m
        f_neg = f[:, :n].masked_fill(~valid[None], float("-inf"))
        f_pos = f[:, n]
        nce = torch.logsumexp(torch.cat([f_neg, f_pos[:, None]], 1), 1) - f_pos  # [B, A]
        loss = nce.mean()
        e = -f.detach() * cfg.temperature
        e_neg = e[:, :n].masked_select(valid[None].expand(b, -1, -1)).mean()
        return loss, {"info_nce": loss.item(), "e_pos": e[:, n].mean().item(), "e_neg": e_neg.item(),
                      "loss": loss.item()}

    # ------------------------------------------------------------------ inference
    def infer_normalized(
        self, o: torch.Tensor, generator: torch.Generator | None = None, num_samples: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Inference in normalized space for features ``o [B, Dh]``.

        Returns ``{"action": [B, A], "samples": [B, N, A], "logits": [B, N], "init": [B, N, A]}``.
        """
        cfg, lc = self.cfg, self.cfg.langevin
        n = num_samples or cfg.inference_samples
        init = self.uniform_actions((o.shape[0], n), generator, o.device)
        if cfg.inference == "langevin":
            chain = dict(
                power=lc.power, noise_scale=lc.noise_scale, delta_action_clip=lc.delta_action_clip,
                grad_clip=lc.grad_clip, form=lc.form, generator=generator,
                num_steps=cfg.inference_langevin_steps or lc.num_steps,
            )
            gfn = self.grad_energy_fn(o)
            a = langevin(gfn, init, self.lo, self.hi, step_size_init=lc.step_size_init, step_size_final=lc.step_size_final, **chain)
            if cfg.optimize_again:
                a = langevin(gfn, a, self.lo, self.hi, step_size_init=cfg.again_step_size_init,
                             step_size_final=cfg.again_step_size_final, **chain)
            f = self.logits(o, a)
        elif cfg.inference == "dfo":
            a, f = dfo(lambda x: self.logits(o, x), init, self.lo, self.hi, iterations=cfg.dfo_iterations,
                       noise_std=cfg.dfo_noise_std, noise_shrink=cfg.dfo_noise_shrink,
                       temperature=cfg.dfo_temperature, generator=generator)
        else:
            a, f = autoregressive_dfo(lambda x, j: self.ar_logits(o, x, j), init, self.lo, self.hi,
                                      iterations=cfg.dfo_iterations, noise_std=cfg.dfo_noise_std,
                                      noise_shrink=cfg.dfo_noise_shrink, temperature=cfg.dfo_temperature,
                                      generator=generator)
        best = torch.gather(a, 1, f.argmax(1)[:, None, None].expand(-1, 1, self.act_dim))[:, 0]
        return {"action": best, "samples": a, "logits": f, "init": init}

    @torch.no_grad()
    def predict_action_chunk(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """raw ``obs [B, n_obs, Do]`` -> raw ``[B, 1, A]`` clipped to the env bounds."""
        a = self.infer_normalized(self.obs_features(obs), generator)["action"]
        a = self.act_norm.unnormalize(a)
        return torch.maximum(torch.minimum(a, self.env_high), self.env_low)[:, None]

    @torch.no_grad()
    def monitor(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, float]:
        """Monitor-only metric: MSE (normalized units) of the inferred action against the demonstration."""
        o = self.obs_features(batch["obs"])
        pos = self.act_norm.normalize(batch["action"][:, 0])
        a = self.infer_normalized(o, generator)["action"]
        return {"action_mse": float(((a - pos) ** 2).mean())}

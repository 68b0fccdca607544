"""Named run presets (``steerlab train <preset>``). Each is a complete :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses

from steerlab.baselines.mse import MSEConfig
from steerlab.baselines.nearest import NearestConfig
from steerlab.ebm.policy import IBCConfig, LangevinConfig
from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, FlowConfig
from steerlab.nav.policy import NavPolicyConfig
from steerlab.steer.critic_policy import EnergyPolicyConfig
from steerlab.train.config import EvalConfig, TrainConfig

_LANG = IBCConfig()  # the repo's particle/mlp_ebm_langevin.gin
_IBC_OPT = dict(optimizer="adam_keras")  # IBC's get_agent: tf.keras.optimizers.Adam with its defaults (eps 1e-7)
# the particle generative presets' optimizer: AdamW + cosine with warm-up, EMA of the weights
_GEN_OPT = dict(lr=1e-3, optimizer="adamw", betas=(0.95, 0.999), weight_decay=1e-6, lr_schedule="cosine",
                warmup_steps=500, ema_decay=0.999)
# MetaWorld runs: push-v3 from 50 expert demos, evaluated on 50 held-out env seeds (100000...) in one batch, a
# 15-minute training cap, one torch thread (networks this small gain nothing from a second, which contends with the
# MetaWorld envs and other jobs on a 2-core machine)
_MW = dict(env="metaworld/push-v3", episodes=50, max_minutes=15.0, threads=1, log_interval=500, ckpt_interval=2000,
           eval=EvalConfig(episodes=50, batch=50))

PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "ibc-particle-langevin": (
        "IBC repo particle config: 256x2 MLP, batch 512, 8 Langevin counter-examples (K=100), "
        "gradient penalty, 512-chain Langevin inference, Keras' Adam, 100k steps",
        TrainConfig(policy=_LANG, steps=100_000, batch_size=512, **_IBC_OPT),
    ),
    "ibc-particle-langevin-paper": (
        "IBC paper App. D.3 particle EBM: 128x16 spectral-norm MLP, batch 128, 64 Langevin counter-examples "
        "(K=50), Keras' Adam (the repo's optimizer), 50k steps",
        TrainConfig(
            policy=IBCConfig(width=128, depth=16, spectral_norm=True, num_counter_examples=64,
                             langevin=LangevinConfig(num_steps=50)),
            steps=50_000, batch_size=128, **_IBC_OPT,
        ),
    ),
    "ibc-particle-dfo": (
        "IBC repo particle/mlp_ebm_dfo.gin: plain 256x2 MLP (MLPDropout layers), batch 512, 8 uniform "
        "counter-examples, no gradient penalty, iterative DFO inference over 512 samples, Keras' Adam, 100k steps",
        TrainConfig(
            policy=IBCConfig(layers="mlp", num_counter_examples=8, fraction_langevin_samples=0.0,
                             grad_penalty=False, inference="dfo", inference_samples=512),
            steps=100_000, batch_size=512, **_IBC_OPT,
        ),
    ),
    "ibc-particle-ardfo": (
        "IBC with one energy head per action dimension (paper Algorithm 2): 256x2, batch 512, every head trained on "
        "every row with 16 uniform counter-examples (half vary dimension j, half the prefix 0..j), autoregressive "
        "DFO over 512 samples "
        "(the paper's 1,024 halved for CPU evaluation: --policy.inference-samples 1024 restores it), Keras' Adam",
        TrainConfig(
            policy=IBCConfig(energy="autoregressive", num_counter_examples=16, fraction_langevin_samples=0.0,
                             grad_penalty=False, inference="autoregressive_dfo", inference_samples=512),
            steps=100_000, batch_size=512, **_IBC_OPT,
        ),
    ),
    "ibc-particle-ardfo-made": (
        "Autoregressive DFO with every head in one pass (not in IBC): a 256x2 MADE-masked plain MLP whose output j "
        "reads a_0..j only, batch 512, 32 uniform counter-examples per row shared by all heads (each changes the "
        "demonstration from a cut dimension on; head m uses those cut at or before m), autoregressive DFO over 512 "
        "samples, Keras' Adam: a step costs one pass over 33 candidates where ibc-particle-ardfo's costs A passes "
        "over 17",
        TrainConfig(
            policy=IBCConfig(layers="mlp", energy="autoregressive", ar_network="made", ar_train_heads="shared",
                             num_counter_examples=32, fraction_langevin_samples=0.0, grad_penalty=False,
                             inference="autoregressive_dfo", inference_samples=512),
            steps=100_000, batch_size=512, **_IBC_OPT,
        ),
    ),
    "ibc-particle-langevin-budget": (
        "IBC-Langevin sized for a 20-minute CPU budget: the repo config (8 counter-examples, K=100 chains, "
        "512-chain inference) with batch 128 (4x the steps per second) and bfloat16 chain arithmetic where the CPU "
        "has native bf16 (chain_dtype auto)",
        TrainConfig(policy=IBCConfig(chain_dtype="auto"), steps=100_000, batch_size=128, **_IBC_OPT),
    ),
    "ibc-particle-langevin-warmup": (
        "The budget IBC-Langevin preset with a uniform warm-up (not in IBC): the first 5,000 steps train with "
        "uniform counter-examples only (the DFO config's, a few per cent of a Langevin step's cost), then Langevin "
        "counter-examples as in the repo config; compared with the budget preset in BENCHMARKS.md §3",
        TrainConfig(policy=IBCConfig(chain_dtype="auto", uniform_warmup_steps=5000), steps=100_000, batch_size=128,
                    **_IBC_OPT),
    ),
    "ibc-particle-langevin-persistent": (
        "The budget IBC-Langevin preset with persistent training chains (not in IBC): each dataset row's 8 "
        "counter-examples are stored, and its next visit continues them for 10 Langevin steps over the same schedule "
        "endpoints instead of 100 from uniform; a row not yet visited continues the stored chains of the nearest "
        "visited row of its episode (up to 8 rows before or after it) the same way; rows with no such neighbour, and "
        "5% of visits, run the full chain from uniform (IBCConfig.persistent_chains, persistent_steps, "
        "persistent_init, persistent_neighbours, persistent_reinit); inference unchanged",
        TrainConfig(policy=IBCConfig(chain_dtype="auto", persistent_chains=True, persistent_steps=10,
                                     persistent_reinit=0.05, persistent_init="neighbour", persistent_neighbours=8),
                    steps=100_000, batch_size=128, **_IBC_OPT),
    ),
    "diffusion-particle": (
        "Diffusion policy whose network predicts the clean chunk (prediction_type 'sample': 94-100% success from 1-D "
        "to 8-D where epsilon-prediction gets 5% at 2-D, BENCHMARKS.md sections 1 and 1c), squared-cosine DDPM, 100 "
        "train steps, DDIM-10 inference, MLP denoiser (256x4): horizon 16, 2 obs frames, 8 executed actions; AdamW + "
        "cosine, batch 256, EMA",
        TrainConfig(policy=DiffusionConfig(prediction_type="sample", sampler="ddim", num_inference_steps=10), steps=30_000, batch_size=256,
                    lr=1e-3, optimizer="adamw", betas=(0.95, 0.999), weight_decay=1e-6, lr_schedule="cosine",
                    warmup_steps=500, ema_decay=0.999),
    ),
    "diffusion-particle-unet": (
        "Diffusion policy with diffusion_policy's ConditionalUnet1D (FiLM, down dims 64/128/256), DDIM-10",
        TrainConfig(policy=DiffusionConfig(denoiser=DenoiserConfig(arch="unet"), sampler="ddim",
                                           num_inference_steps=10),
                    steps=30_000, batch_size=256, lr=1e-4 * 3, optimizer="adamw", betas=(0.95, 0.999),
                    weight_decay=1e-6, lr_schedule="cosine", warmup_steps=500, ema_decay=0.999),
    ),
    "flow-particle": (
        "Flow-matching policy on pi0's path with Beta(1.5, 1) times whose network predicts the clean chunk "
        "(prediction_type 'sample'; the velocity output reaches 86% at 2-D, and keeps the two modes of multimodal "
        "demos less well, BENCHMARKS.md sections 1 and 1c), 10 Euler steps, MLP denoiser (256x4): horizon 16, 2 obs "
        "frames, 8 executed actions; AdamW + cosine, batch 256, EMA",
        TrainConfig(policy=FlowConfig(prediction_type="sample"), steps=30_000, batch_size=256, lr=1e-3, optimizer="adamw",
                    betas=(0.95, 0.999), weight_decay=1e-6, lr_schedule="cosine", warmup_steps=500,
                    ema_decay=0.999),
    ),
    "wm-particle": (
        "World model of the particle task: flow matching over the next 16 agent positions given the current "
        "observation and a 16-step plan (task particle-wm; --dataset from steerlab.data.collect_wm), MLP 256x4",
        TrainConfig(env="particle-wm", policy=FlowConfig(horizon=16, n_obs_steps=1, n_action_steps=16),
                    steps=10_000, batch_size=256, lr=1e-3, optimizer="adamw", betas=(0.95, 0.999),
                    weight_decay=1e-6, lr_schedule="cosine", warmup_steps=500, ema_decay=0.999),
    ),
    "energy-particle": (
        "Energy critic (cross-attention over observation-frame tokens, InfoNCE, T=0.5) trained beside a frozen flow "
        "policy (the flow-particle preset's; a velocity-output base needs --policy.base.prediction-type velocity): pass "
        "the trained policy with --policy.base-run RUN (energy-only mode); 100 held-out episodes",
        TrainConfig(policy=EnergyPolicyConfig(base=FlowConfig(prediction_type="sample"), mode="energy-only"),
                    steps=6000, batch_size=128,
                    lr=3e-4, optimizer="adamw", lr_schedule="cosine", warmup_steps=200, val_episodes=100,
                    monitor_batch=64, log_interval=100, ckpt_interval=500),
    ),
    "energy-particle-joint": (
        "Flow policy and energy critic trained jointly from scratch (policy loss + energy loss)",
        TrainConfig(policy=EnergyPolicyConfig(base=FlowConfig(prediction_type="sample"), mode="joint"), steps=30_000,
                    batch_size=256,
                    lr=1e-3, optimizer="adamw", betas=(0.95, 0.999), weight_decay=1e-6, lr_schedule="cosine",
                    warmup_steps=500, val_episodes=100, monitor_batch=64),
    ),
    "mse-particle": (
        "Explicit MSE behavioural cloning (IBC's mlp_mse): 256x2, dropout 0.1, z-scored actions, batch 512, Keras' "
        "Adam, 50k steps",
        TrainConfig(policy=MSEConfig(), steps=50_000, batch_size=512, **_IBC_OPT),
    ),
    "nearest-particle": (
        "Nearest-neighbour baseline: the demonstrated action of the closest z-scored observation history",
        TrainConfig(policy=NearestConfig(), steps=0),
    ),
    "nomad-nav2d": (
        "NoMaD-style navigation policy on Nav2D-v0 (CNN + transformer over 2 context frames and a goal token with "
        "goal masking, ConditionalUnet1D noise head over 8 waypoints, distance head) with the two-stage intent "
        "(z1 from ref_traj, z2 VAE posterior / N(0, I) prior, CFG dropout); DDPM-10; 20,000 route-planner episodes",
        TrainConfig(env="nav2d", episodes=20_000, policy=NavPolicyConfig(), steps=20_000, batch_size=128, lr=3e-4,
                    optimizer="adamw", betas=(0.95, 0.999), weight_decay=1e-6, lr_schedule="cosine",
                    warmup_steps=300, ema_decay=0.999, val_episodes=50, monitor_batch=32, log_interval=100,
                    ckpt_interval=500),
    ),
    # ---- MetaWorld from state (obs 39-D, actions 4-D in [-1, 1]): 50 scripted-expert demos of push-v3 (--env
    # metaworld/<task> picks another task), sized for about 12 minutes of training on a 2-core CPU, capped at 15
    "mse-metaworld": (
        "MetaWorld push-v3 (--env metaworld/<task>), 50 expert demos: explicit MSE behavioural cloning, 256x2 MLP "
        "over 2 obs frames, batch 256, Keras' Adam, 80k steps (~10 min at ~130 steps/s): the cheapest baseline",
        TrainConfig(**_MW, policy=MSEConfig(), steps=80_000, batch_size=256, **_IBC_OPT),
    ),
    "diffusion-metaworld": (
        "MetaWorld push-v3, 50 expert demos: diffusion policy predicting the clean chunk (the strongest "
        "parameterization measured on particle), DDIM-10, MLP denoiser 256x4, horizon 16, 2 obs frames, 8 executed "
        "actions; AdamW + cosine, batch 256, EMA, 30k steps (~8-10 min at 50-70 steps/s), as diffusion-particle",
        TrainConfig(**_MW, policy=DiffusionConfig(prediction_type="sample", sampler="ddim", num_inference_steps=10),
                    steps=30_000, batch_size=256, **_GEN_OPT),
    ),
    "flow-metaworld": (
        "MetaWorld push-v3, 50 expert demos: flow matching predicting the clean chunk, 10 Euler steps, MLP denoiser "
        "256x4, horizon 16, 2 obs frames, 8 executed actions; AdamW + cosine, batch 256, EMA, 30k steps (~10 min at "
        "~50 steps/s), as flow-particle",
        TrainConfig(**_MW, policy=FlowConfig(prediction_type="sample"), steps=30_000, batch_size=256, **_GEN_OPT),
    ),
    "ibc-metaworld-dfo": (
        "MetaWorld push-v3, 50 expert demos: IBC with uniform counter-examples (the particle DFO config: 256x2 MLP, "
        "8 counter-examples, no gradient penalty) and iterative DFO over 256 samples per action (one decision per "
        "env step), batch 256, Keras' Adam, 20k steps (~11 min at ~30 steps/s)",
        TrainConfig(**_MW, policy=IBCConfig(layers="mlp", num_counter_examples=8, fraction_langevin_samples=0.0,
                                            grad_penalty=False, inference="dfo", inference_samples=256,
                                            obs_std_eps=1e-4),
                    steps=20_000, batch_size=256, **_IBC_OPT),
    ),
    "ibc-metaworld-langevin": (
        "MetaWorld push-v3, 50 expert demos: IBC-Langevin (256x2 ResNet, 8 counter-examples from 50-step chains, "
        "gradient penalty), batch 64, Keras' Adam, 4k steps (~11 min at ~6 steps/s: the chains dominate); inference "
        "64 chains of 25 steps per action (0.5 s per call of 50 envs, one call per env step)",
        TrainConfig(**_MW, policy=IBCConfig(langevin=LangevinConfig(num_steps=50), inference_samples=64,
                                            inference_langevin_steps=25, obs_std_eps=1e-4),
                    steps=4_000, batch_size=64, **_IBC_OPT),
    ),
    "energy-metaworld": (
        "MetaWorld push-v3, 10 expert demos: energy critic (as energy-particle) trained beside a frozen diffusion "
        "policy (the diffusion-metaworld preset's, trained on the same demos): pass it with --policy.base-run RUN "
        "(energy-only mode); 2 demos held out for the ranking accuracy",
        TrainConfig(**{**_MW, "episodes": 10, "log_interval": 100, "ckpt_interval": 500},
                    policy=EnergyPolicyConfig(base=DiffusionConfig(prediction_type="sample", sampler="ddim",
                                                                   num_inference_steps=10), mode="energy-only"),
                    steps=6000, batch_size=128, lr=3e-4, optimizer="adamw", lr_schedule="cosine", warmup_steps=200,
                    val_episodes=2, monitor_batch=64),
    ),
    "demo": (
        "`steerlab demo`: the diffusion-particle preset with the network predicting the clean chunk, 10,000 steps "
        "(about 1.5 min on one CPU thread, which beats two for a network this small) under a 3-minute cap, evaluated on "
        "50 episodes (see `steerlab demo --help`)",
        TrainConfig(policy=DiffusionConfig(prediction_type="sample", sampler="ddim", num_inference_steps=10),
                    steps=10_000, batch_size=256, lr=1e-3, optimizer="adamw", betas=(0.95, 0.999), weight_decay=1e-6,
                    lr_schedule="cosine", warmup_steps=500, ema_decay=0.999, log_interval=100, ckpt_interval=1000,
                    max_minutes=3.0, threads=1, eval=dataclasses.replace(TrainConfig().eval, episodes=50, batch=50)),
    ),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return dataclasses.replace(PRESETS[name][1], preset=name)

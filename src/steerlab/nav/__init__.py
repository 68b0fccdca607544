"""NoMaD-style goal-conditioned navigation policy with a two-stage latent intent.

- :mod:`steerlab.nav.model`: the network (vision encoder with goal masking, noise-prediction U-Net, distance head)
  behind NoMaD's ``model(name, **kwargs)`` call interface;
- :mod:`steerlab.nav.intent`: z1 (route) / z2 (style) intent, CFG dropout, KL and the guidance formula;
- :mod:`steerlab.nav.policy`: :class:`NavPolicy` (loss, differentiable sampling, actions);
- :mod:`steerlab.nav.data`: training windows over a ``steerlab collect nav2d`` dataset.
"""

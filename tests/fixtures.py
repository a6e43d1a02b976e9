"""Tiny models and configs the training tests share.

Free of TensorFlow at import, so that `distributed_programs.py` can still configure devices and
collectives after importing it.
"""

import dataclasses

from tfp_realnvp import configs

# `RealNVP.from_preset("digits", **TINY_MODEL)`: one scale, one residual block of 8 filters, no dropout.
TINY_MODEL = {"num_scales": 1, "num_blocks": 1, "num_filters": 8, "dropout": 0.0}


def tiny_config(**changes):
  """The digits config with `TINY_MODEL`, batch 16, 6 steps, a log line every 2 steps, a checkpoint every 3
  and an evaluation every 4, with `changes` applied."""
  values = dict(
    batch_size=16,
    num_train_steps=6,
    warmup_steps=0,
    log_every_steps=2,
    checkpoint_every_steps=3,
    eval_every_steps=4,
    num_samples=4,
    model_overrides=TINY_MODEL,
  )
  return dataclasses.replace(configs.get_config(), **{**values, **changes})

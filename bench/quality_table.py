"""The model-quality table: preprocessing x dequantization x weight averaging x importance draws, one command.

  python bench/quality_table.py                       # digits, fit train[:1200], validate train[1200:]
  python bench/quality_table.py --eval_split=test --train_split=train   # the test figures (report once)

Trains one digits run per (preprocessing, dequantization) pair with `train_lib.train_and_evaluate` (the default
config otherwise, `ema_decay` included), each in its own workdir under `--workdir_root` (a finished run is only
evaluated again). Each run's last checkpoint is then evaluated twice, with its training weights (`ema: off`) and
with their moving average (`ema: on`), at `K = 1` and `K = --num_importance_samples` draws of its own
dequantizer (`Trainer.evaluate_metrics`: a bound on the discrete `-log2 P(v) / D`, in expectation), and the
flow's mass inside the pixel box is measured (`ImageRealNVP.pixel_box_mass`, 10,000 samples at T=1, with the
averaged weights). Prints one JSON line per (run, weights), then a Markdown table.
"""

import dataclasses
import json
import os
import tempfile
import time

from absl import app, flags

from tfp_realnvp import data
from tfp_realnvp.training import checkpoints, configs, train_lib

PREPROCESSINGS = {"paper": 0.05, "box": 0.0}  # `logit_alpha`

_WORKDIR_ROOT = flags.DEFINE_string(
  "workdir_root", None, "Where the runs' workdirs go (default: a temp dir)."
)
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train[:1200]", "Split to train on.")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", "train[1200:]", "Split to evaluate on.")
_PREPROCESSING = flags.DEFINE_list("preprocessing", list(PREPROCESSINGS), "paper (alpha 0.05) and/or box.")
_DEQUANTIZATION = flags.DEFINE_list("dequantization", list(configs.DEQUANTIZATIONS), "uniform, variational.")
_NUM_IMPORTANCE_SAMPLES = flags.DEFINE_integer("num_importance_samples", 100, "The larger K.")
_NUM_TRAIN_STEPS = flags.DEFINE_integer("num_train_steps", None, "Training steps (default: the config's).")


def run_config(preprocessing, dequantization):
  """The default digits config with this preprocessing and dequantization, on the flags' splits."""
  return dataclasses.replace(
    configs.get_config(),
    logit_alpha=PREPROCESSINGS[preprocessing],
    dequantization=dequantization,
    train_split=_TRAIN_SPLIT.value,
    eval_split=_EVAL_SPLIT.value,
    num_importance_samples=_NUM_IMPORTANCE_SAMPLES.value,
    num_train_steps=_NUM_TRAIN_STEPS.value or configs.get_config().num_train_steps,
  )


def evaluate(config, workdir, averaged):
  """`{K: bits/dim}` of the workdir's last checkpoint, with averaged or training weights."""
  trainer = train_lib.build_trainer(config if averaged else dataclasses.replace(config, ema_decay=0.0))
  latest, _ = checkpoints.newest_intact(checkpoints.checkpoint_dir(workdir))
  trainer.restore(latest)
  dataset = data.load(
    config.dataset, config.eval_split, batch_size=config.batch_size, training=False, seed=config.seed
  )
  return {
    draws: trainer.evaluate_metrics(dataset, draws)["bits_per_dim"]
    for draws in (1, config.num_importance_samples)
  }


def main(argv):
  del argv
  root = _WORKDIR_ROOT.value or tempfile.mkdtemp(prefix="quality_table_")
  rows = []
  for preprocessing in _PREPROCESSING.value:
    for dequantization in _DEQUANTIZATION.value:
      config = run_config(preprocessing, dequantization)
      workdir = os.path.join(root, f"{preprocessing}_{dequantization}")
      start = time.perf_counter()
      result = train_lib.train_and_evaluate(config, workdir)
      train_s = time.perf_counter() - start
      mass, mass_error = result.flow.pixel_box_mass()
      for averaged in (False, True):
        figures = evaluate(config, workdir, averaged)
        row = {
          "preprocessing": preprocessing,
          "logit_alpha": config.logit_alpha,
          "dequantization": dequantization,
          "ema": "on" if averaged else "off",
          "ema_decay": config.ema_decay if averaged else 0.0,
          "train_split": config.train_split,
          "eval_split": config.eval_split,
          "bits_per_dim_k1": figures[1],
          f"bits_per_dim_k{config.num_importance_samples}": figures[config.num_importance_samples],
          "pixel_box_mass": mass,
          "pixel_box_mass_standard_error": mass_error,
          "run_s": round(train_s, 1),
          "load_average": os.getloadavg()[0],
          "workdir": workdir,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
  big_k = _NUM_IMPORTANCE_SAMPLES.value
  print(f"\n| preprocessing | dequantization | EMA | K = 1 | K = {big_k} | mass in box |")
  print("|---|---|---|---|---|---|")
  for row in rows:
    print(
      f"| {row['preprocessing']} | {row['dequantization']} | {row['ema']} | {row['bits_per_dim_k1']:.4f} | "
      f"{row[f'bits_per_dim_k{big_k}']:.4f} | {100 * row['pixel_box_mass']:.2f}% |"
    )


if __name__ == "__main__":
  app.run(main)

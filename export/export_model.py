r"""Exports a training run's flow as a SavedModel for TF Serving.

  python export/export_model.py --workdir=runs/digits --export_base=exports
  python export/export_model.py --workdir=runs/digits --export_base=exports \
      --checkpoint=runs/digits/checkpoints/ckpt-2000 --model_name=digits --version=7

Writes `<export_base>/<model_name>/<version>/` (the next free version unless `--version` is given)
from the workdir's latest checkpoint, or from `--checkpoint`. Serve it with
`docker run -p 8501:8501 -v $PWD/exports/realnvp:/models/realnvp -e MODEL_NAME=realnvp tensorflow/serving`.
Prints one line, `exported digits flow (844,673 parameters) from runs/digits/checkpoints/ckpt-2000 to
exports/realnvp/3`; TensorFlow's start-up and INFO logging is hidden unless `TF_CPP_MIN_LOG_LEVEL` is set or
`--verbosity` is given (`tfp_realnvp.internal.quiet_startup`). `--max_num_samples` (default 4096) caps a `sample`
request (and the draws `K` of a `discrete_bits_per_dim` request); `--max_flow_evaluations` (default: from the
model's operations per row) caps the rows, samples, rows x classes or rows x draws (x classes) of any request.
Every export has the `discrete_bits_per_dim` signature: the importance-weighted bound on the discrete image's
bits/dim with the run's dequantizer (`levels`, `num_samples` K, `seed`), beside `log_prob`, the continuous
density of dequantized values. A `--condition=label` run's export also has the `classify` signature
(`log p(y | x)`, with the training split's label frequencies as `p(y)`) and `classify_levels` (the same for
integer pixel levels, dequantized by the run's dequantizer), and every signature of a conditional flow takes
`conditional_input`.

Every export has the `ood_score` signature (`x` -> `score`, `is_outlier`; docs/ood.md; of the marginal `p(x)`
for a `--condition=label` run): its threshold flags `--ood_false_positive_rate` (default 5%) of the scores of
held-out in-distribution images, read from the run's data: from `--ood_split` if given, else from the run's
`--eval_split` when the run named one that is not a test split (a validation split), else from its training
split, which the flow has seen (then more than the stated rate of new in-distribution images is flagged; the
second output line says so). A test split is never used. The second line says what was chosen:
`ood_score: outlier above -1.2345, 5% of the images of train[50000:52000] (the run's eval split)`.
"""

import sys

from absl import app, flags, logging

from tfp_realnvp.internal import quiet_startup

if __name__ == "__main__":
  quiet_startup.import_tensorflow_quietly(sys.argv)  # before `export` imports TensorFlow

from tfp_realnvp.serving import export, serving_module  # noqa: E402
from tfp_realnvp.training import configs  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory (with config.json and checkpoints/).")
flags.DEFINE_string("export_base", None, "Directory above the model directory TF Serving watches.")
flags.DEFINE_string("model_name", "realnvp", "The model's directory name (TF Serving's MODEL_NAME).")
flags.DEFINE_integer("version", None, "The version to write; default: one more than the newest.")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix to export; default: the workdir's latest.")
flags.DEFINE_integer(
  "max_num_samples",
  serving_module.DEFAULT_MAX_NUM_SAMPLES,
  "The most samples one request to the `sample` signature (or draws K to `discrete_bits_per_dim`) may ask "
  "for; larger requests are refused.",
)
flags.DEFINE_integer(
  "max_flow_evaluations",
  None,
  "The most flow evaluations one request may cost (rows; samples; rows x classes for classify; rows x draws "
  "for discrete_bits_per_dim); default: from the model's operations per row. Larger requests are refused.",
)
flags.DEFINE_string(
  "ood_split",
  None,
  "The held-out in-distribution split whose scores set the ood_score threshold (never a test split); default: "
  "the run's eval split when it is not a test split, else its training split.",
)
flags.DEFINE_float(
  "ood_false_positive_rate",
  0.05,
  "The share of the held-out images' scores the ood_score threshold flags as outliers.",
)
flags.mark_flags_as_required(["workdir", "export_base"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the line below is the output; INFO chatter would hide it
  try:
    exported = export.export_workdir(
      FLAGS.workdir,
      FLAGS.export_base,
      FLAGS.model_name,
      FLAGS.version,
      FLAGS.checkpoint,
      FLAGS.max_num_samples,
      max_flow_evaluations=FLAGS.max_flow_evaluations,
      ood_split=FLAGS.ood_split,
      ood_false_positive_rate=FLAGS.ood_false_positive_rate,
    )
  except configs.ConfigError as error:  # like train.py: one line, status 2
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)
  except (OSError, ValueError) as error:
    sys.exit(f"export_model: {error}")
  print(
    f"exported {exported.dataset} flow ({exported.num_parameters:,} parameters) from {exported.checkpoint} "
    f"to {exported.path}"
  )
  split = exported.ood_split
  if split is not None:
    caveat = (
      "" if split.held_out else "; the flow trained on these images, so new ones are flagged more often"
    )
    print(
      f"ood_score: outlier above {exported.ood_threshold:.4f}, {FLAGS.ood_false_positive_rate * 100:g}% of the "
      f"images of {split.name} ({split.reason}){caveat}"
    )


if __name__ == "__main__":
  app.run(main)

r"""Trains a RealNVP flow and reports its test bits/dim: a thin command line over `train_lib`.

  python train.py                                   # the 'digits' preset on the bundled 8x8 digits
  python train.py --dataset=cifar10 --data_dir=~/tensorflow_datasets --workdir=runs/cifar10
  python train.py --strategy=mirrored --num_cpu_devices=2 --workdir=runs/digits_mirrored
  python train.py --model=num_blocks=4 --model=dropout=0.3 --num_train_steps=5000
  python train.py --dataset=cifar10 --compute_dtype=bfloat16        # mixed precision on AVX512-BF16 CPUs

Flags left unset take the dataset's default config (`configs.get_config`). Rerunning a command resumes from
the latest checkpoint in its workdir. A setting that cannot work prints one `error:` line and exits with 2.
"""

import ast
import dataclasses
import sys

from absl import app, flags, logging

from tfp_realnvp import configs, train_lib

_DEFAULT = "(default: the dataset's config)"

flags.DEFINE_string("workdir", None, "Output directory (default: runs/<dataset>). Rerunning resumes from it.")
flags.DEFINE_string(
  "dataset", "digits", "`digits` (bundled), a tfds name such as mnist or cifar10, or dir:PATH."
)
flags.DEFINE_string("data_dir", None, "tfds data directory " + _DEFAULT)
flags.DEFINE_integer("image_size", None, "Resize images to this height and width " + _DEFAULT)
flags.DEFINE_string("preset", None, "RealNVP preset (default: the dataset's).")
flags.DEFINE_multi_string("model", [], "Preset override `name=value`, repeatable, e.g. --model=dropout=0.3.")
flags.DEFINE_integer("batch_size", None, "Global batch size, split across replicas " + _DEFAULT)
flags.DEFINE_integer("num_train_steps", None, "Training steps " + _DEFAULT)
flags.DEFINE_float("learning_rate", None, "Adam learning rate " + _DEFAULT)
flags.DEFINE_integer("warmup_steps", None, "Linear learning-rate warm-up steps " + _DEFAULT)
flags.DEFINE_string("learning_rate_decay", None, "`cosine` or `constant` " + _DEFAULT)
flags.DEFINE_float("l2_coefficient", None, "L2 on weight-norm and tanh scales " + _DEFAULT)
flags.DEFINE_float("clip_global_norm", None, "Gradient clipping by global norm " + _DEFAULT)
flags.DEFINE_enum(
  "compute_dtype",
  None,
  [dtype for dtype in configs.COMPUTE_DTYPES if dtype is not None],
  "Conditioner arithmetic: bfloat16 is 1.5-2x faster on 32x32 images on CPUs with AVX512-BF16 "
  "(bench/README.md); float16 for GPUs, with dynamic loss scaling " + _DEFAULT,
)
flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA (slower on CPUs) " + _DEFAULT)
flags.DEFINE_string("strategy", None, "default | one_device | mirrored | multi_worker_mirrored | tpu.")
flags.DEFINE_integer("num_cpu_devices", None, "Split the CPU into this many logical devices (for mirrored).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
flags.DEFINE_integer("log_every_steps", None, "Steps between log lines " + _DEFAULT)
flags.DEFINE_integer("checkpoint_every_steps", None, "Steps between checkpoints " + _DEFAULT)
flags.DEFINE_integer(
  "eval_every_steps", None, "Steps between test evaluations, 0: only at the end " + _DEFAULT
)
flags.DEFINE_integer("num_samples", None, "Samples per grid " + _DEFAULT)
flags.DEFINE_integer("seed", None, "Seed of the input pipeline " + _DEFAULT)

FLAGS = flags.FLAGS
# Flags that set the config field of the same name (`tpu` sets `tpu_address`).
_CONFIG_FLAGS = {
  name: name
  for name in (
    "data_dir",
    "image_size",
    "preset",
    "batch_size",
    "num_train_steps",
    "learning_rate",
    "warmup_steps",
    "learning_rate_decay",
    "l2_coefficient",
    "clip_global_norm",
    "compute_dtype",
    "jit_compile",
    "strategy",
    "num_cpu_devices",
    "log_every_steps",
    "checkpoint_every_steps",
    "eval_every_steps",
    "num_samples",
    "seed",
  )
}
_CONFIG_FLAGS["tpu"] = "tpu_address"


def _model_overrides(assignments):
  overrides = {}
  for assignment in assignments:
    name, separator, text = assignment.partition("=")
    if not separator or not name.isidentifier():
      raise configs.ConfigError(
        f"`--model` must look like name=value (e.g. dropout=0.3); got {assignment!r}."
      )
    try:
      overrides[name] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[name] = text
  return overrides


def _config_from_flags():
  config = configs.get_config(FLAGS.dataset)
  values = {
    field: FLAGS[flag].value for flag, field in _CONFIG_FLAGS.items() if FLAGS[flag].value is not None
  }
  if FLAGS.model:
    values["model_overrides"] = {**config.model_overrides, **_model_overrides(FLAGS.model)}
  return dataclasses.replace(config, **values)


def main(argv):
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # our own log lines are the output; INFO chatter hides them
  if len(argv) > 1:
    _exit_with_error(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --help).", status=2)
  try:
    config = _config_from_flags()
    workdir = FLAGS.workdir or f"runs/{config.dataset.replace('/', '_').replace(':', '_')}"
    train_lib.train_and_evaluate(config, workdir)
  except configs.ConfigError as error:
    _exit_with_error(str(error), status=2)
  except train_lib.NonFiniteLossError as error:
    _exit_with_error(str(error), status=1)


def _exit_with_error(message, status):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)

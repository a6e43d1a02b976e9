r"""Trains a RealNVP flow and reports its test bits/dim: a thin command line over `train_lib`.

  python train.py                                   # the 'digits' preset on the bundled 8x8 digits
  python train.py --dataset=cifar10 --data_dir=~/tensorflow_datasets --workdir=runs/cifar10
  python train.py --strategy=mirrored --num_cpu_devices=2 --workdir=runs/digits_mirrored
  python train.py --model=num_blocks=4 --model=dropout=0.3 --num_train_steps=5000
  python train.py --dataset=cifar10 --compute_dtype=bfloat16        # mixed precision on AVX512-BF16 CPUs
  python train.py --condition=label --workdir=runs/digits_label      # p(x | label): accuracy, marginal bits/dim
  python train.py --condition=label --train_split='train[:1200]' --eval_split='train[1200:]'  # validation
  python train.py --logit_alpha=0.05 --dequantization=uniform --ema_decay=0 --workdir=runs/paper_recipe
  python train.py --workdir=runs/fashion --evaluate_only --eval_split=test --num_importance_samples=100 \
      --max_importance_images=2000        # a finished run's test figures, once, as JSON; writes nothing

Every field of `configs.TrainConfig` is a flag of the same name (`--tpu` sets `tpu_address`;
`--model=name=VALUE`, repeatable, adds to `model_overrides`, VALUE being JSON such as 0.3, 4, [32, 32] or
false, or a plain word such as bfloat16). Flags left unset take the dataset's default config
(`configs.get_config`). `--evaluate_only` evaluates the workdir's latest checkpoint on `--eval_split` (K = 1 over
every image, and with `--num_importance_samples=K` importance-weighted over every image or the first
`--max_importance_images`) and prints one JSON object (`workdir_evaluation.evaluate_workdir`), using no other flag
but `--data_dir` and `--batch_norm_batches`. Rerunning a command resumes from the latest checkpoint in its workdir; a rerun may
change the loop and output settings and `--num_train_steps`, the optimization settings only when named in
`--allow_config_change`, the model and the data never. A setting that cannot work, or a workdir that is in
use or holds another run, prints one `error:` line and exits with 2 (a disk error or a stop on non-finite
values: 1; Ctrl-C: 130, the lock released). TensorFlow's C++ start-up logging is
hidden unless `TF_CPP_MIN_LOG_LEVEL` is set or `--verbosity` is given (`tfp_realnvp.internal.quiet_startup`).
"""

import dataclasses
import json
import re
import sys
import types
import typing

from absl import app, flags, logging

from tfp_realnvp.internal import quiet_startup

if __name__ == "__main__":
  quiet_startup.import_tensorflow_quietly(sys.argv)  # before `train_lib` imports TensorFlow

import tensorflow as tf  # noqa: E402

from tfp_realnvp.training import configs, train_lib  # noqa: E402

# Fields whose flag has another name: the names the command line has always used.
FLAG_NAMES = {"tpu_address": "tpu", "model_overrides": "model"}

_DEFINE_BY_TYPE = {
  bool: flags.DEFINE_bool,
  int: flags.DEFINE_integer,
  float: flags.DEFINE_float,
  str: flags.DEFINE_string,
}


def define_flags(flag_values=flags.FLAGS):
  """Defines this command line's flags in `flag_values`: `--workdir`, `--allow_config_change`, and one per
  `TrainConfig` field."""
  flags.DEFINE_string(
    "workdir",
    None,
    "Output directory (default: runs/<dataset>). Rerunning resumes from it.",
    flag_values=flag_values,
  )
  flags.DEFINE_list(
    "allow_config_change",
    [],
    "Optimization settings a resumed run may change from the workdir's config.json, such as "
    "learning_rate,batch_size (the loop and output settings and num_train_steps always may; the model and "
    "data never).",
    flag_values=flag_values,
  )
  flags.DEFINE_bool(
    "evaluate_only",
    False,
    "Train nothing: evaluate the workdir's latest checkpoint on --eval_split (required) at K = 1 over every "
    "image and, with --num_importance_samples=K > 1, importance-weighted over every image or the first "
    "--max_importance_images; print the figures, the bound each is and the images/s as JSON. Writes nothing.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "max_importance_images",
    None,
    "--evaluate_only: the importance-weighted figure over the first this many images of the split only (it "
    "costs K forward passes per image; the K = 1 figure is always over every image). The JSON says how many.",
    flag_values=flag_values,
  )
  dataset = next(field for field in dataclasses.fields(configs.TrainConfig) if field.name == "dataset")
  help_text = f"{dataset.metadata['help']} Its config is every other flag's default."
  flags.DEFINE_string("dataset", dataset.default, help_text, flag_values=flag_values)
  define_config_flags(configs.TrainConfig, flag_values, exclude=("dataset",))


def define_config_flags(config_class, flag_values, exclude=()):
  """Defines one flag per field of the dataclass `config_class` in `flag_values`, except `exclude`.

  A flag is named after its field (or by `FLAG_NAMES`), is unset (None) by default, takes its help from
  `field.metadata["help"]` and its type from the annotation: `bool`, `int`, `float`, `str` (an enum when
  `field.metadata["choices"]` lists the values), any of these `| None`, `tuple[float, ...]` (comma-separated
  numbers) or `dict[str, ...]` (repeatable `name=VALUE`, see `NameValueParser`).

  (`ml_collections.config_flags` would rename every flag to `--config.NAME`, add a dependency, and fix the
  defaults when the flag is defined, while ours come from `--dataset` after parsing.)
  """
  for field in dataclasses.fields(config_class):
    if field.name in exclude:
      continue
    name, help_text = FLAG_NAMES.get(field.name, field.name), field.metadata.get("help", "")
    kind = _without_none(field.type)
    if field.metadata.get("choices") is not None:
      choices = [choice for choice in field.metadata["choices"] if choice is not None]
      flags.DEFINE_enum(name, None, choices, help_text, flag_values=flag_values)
    elif kind in _DEFINE_BY_TYPE:
      _DEFINE_BY_TYPE[kind](name, None, help_text, flag_values=flag_values)
    elif kind == tuple[float, ...]:
      flags.DEFINE(FloatsParser(), name, None, help_text, flag_values=flag_values, serializer=FloatsParser())
    elif _is_dict(kind):
      flags.DEFINE_multi(NameValueParser(), NameValueParser(), name, None, help_text, flag_values=flag_values)
    else:
      raise TypeError(
        f"Field `{config_class.__name__}.{field.name}` has type {field.type}, which has no flag; use bool, "
        "int, float, str, one of these | None, tuple[float, ...] or dict[str, object]."
      )


def config_values_from_flags(config, flag_values):
  """`{field: value}` for every flag of `config`'s fields that is set in `flag_values`; a dict field's
  `name=VALUE` entries update `config`'s dict."""
  values = {}
  for field in dataclasses.fields(config):
    name = FLAG_NAMES.get(field.name, field.name)
    value = flag_values[name].value if name in flag_values else None
    if value is not None:
      values[field.name] = {**getattr(config, field.name), **dict(value)} if _is_dict(field.type) else value
  return values


def config_from_flags(flag_values=flags.FLAGS):
  """The config of `--dataset` (`configs.get_config`) with every set flag of the parsed `flag_values` applied."""
  config = configs.get_config(flag_values["dataset"].value)
  return dataclasses.replace(config, **config_values_from_flags(config, flag_values))


class FloatsParser(flags.ArgumentParser):
  """Parses comma-separated numbers such as `1.0,0.7` into a tuple of floats (and writes them back)."""

  syntactic_help = "comma-separated numbers"

  def parse(self, argument):
    if isinstance(argument, tuple):
      return argument
    try:
      return tuple(float(item) for item in argument.split(","))
    except ValueError:
      raise ValueError(f"expected comma-separated numbers such as 1.0,0.7; got {argument!r}") from None

  def flag_type(self):
    return "floats"

  def serialize(self, value):
    return ",".join(map(repr, value))


class NameValueParser(flags.ArgumentParser):
  """Parses `name=VALUE` into `(name, value)`: VALUE is JSON (`0.3`, `4`, `[32, 32]`, `false`, `null`, `"a"`),
  or a plain word (letters first, then letters, digits, `_`, `.` or `-`) such as `bfloat16`, which is a string.
  Python's `True`, `False` and `None` are refused rather than read as strings."""

  syntactic_help = "name=VALUE"
  _WORD = re.compile(r"[A-Za-z_][\w.\-]*")

  def parse(self, argument):
    name, separator, text = argument.partition("=")
    if not separator or not name.isidentifier():
      raise ValueError(f"expected name=VALUE such as dropout=0.3; got {argument!r}")
    try:
      return name, json.loads(text)
    except json.JSONDecodeError:
      if self._WORD.fullmatch(text) and text not in ("True", "False", "None"):
        return name, text
    raise ValueError(
      f"VALUE of `{name}` must be JSON (0.3, 4, [32, 32], true, false, null) or a plain word such as "
      f"bfloat16; got {text!r}"
    )

  def flag_type(self):
    return "name=value"

  def serialize(self, value):
    return f"{value[0]}={json.dumps(value[1])}"


def _without_none(annotation):
  """`X` for an annotation `X | None` (or `Optional[X]`), else the annotation itself."""
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if len(others) == 1:
      return others[0]
  return annotation


def _is_dict(annotation):
  return annotation is dict or typing.get_origin(annotation) is dict


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # our own log lines are the output; INFO chatter hides them
  if len(argv) > 1:
    _exit_with_error(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --help).", status=2)
  try:
    if flags.FLAGS.evaluate_only:
      _evaluate_only(flags.FLAGS)
      return
    config = config_from_flags(flags.FLAGS)
    workdir = flags.FLAGS.workdir or f"runs/{config.dataset.replace('/', '_').replace(':', '_')}"
    train_lib.train_and_evaluate(config, workdir, flags.FLAGS.allow_config_change)
  except configs.ConfigError as error:
    _exit_with_error(str(error), status=2)
  except train_lib.NonFiniteLossError as error:
    _exit_with_error(str(error), status=1)
  except (OSError, tf.errors.OpError) as error:  # a disk error the run did not expect: one line
    _exit_with_error(_first_line(error), status=1)
  except KeyboardInterrupt:
    _exit_with_error(
      "interrupted; the workdir's lock is released and its checkpoints are intact: rerun the same command "
      "to resume from the last one.",
      status=130,
    )


def _evaluate_only(flag_values):
  """`--evaluate_only`: the JSON report of `workdir_evaluation.evaluate_workdir` on stdout."""
  from tfp_realnvp.training import workdir_evaluation

  if not flag_values.workdir or not flag_values.eval_split:
    raise configs.ConfigError("--evaluate_only needs --workdir and --eval_split (such as test).")
  report = workdir_evaluation.evaluate_workdir(
    flag_values.workdir,
    flag_values.eval_split,
    flag_values.num_importance_samples or 1,
    flag_values.max_importance_images,
    data_dir=flag_values.data_dir,
    batch_norm_batches=flag_values.batch_norm_batches,
  )
  print(json.dumps(report, indent=2), flush=True)


def _first_line(error):
  text = (str(error).strip().splitlines() or [""])[0]
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _parse_flags(argv):
  """absl's flag parsing, with a bad flag reported as one `error:` line and status 2, like a bad setting."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _exit_with_error(f"{error} (see --help)", status=2)


def _exit_with_error(message, status):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=_parse_flags)

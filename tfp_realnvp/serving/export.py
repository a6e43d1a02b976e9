"""SavedModel export of a RealNVP flow for TF Serving, the TensorFlow C API and plain TensorFlow.

`export_saved_model(flow, export_base)` writes `<export_base>/<model_name>/<version>/` with the signatures of
`serving.ServingModule` (`log_prob`, `sample`, `encode`, `decode`, which take `conditional_input` for a
conditional flow, `classify` given `label_log_prior`, `discrete_bits_per_dim` given a `dequantizer`,
`classify_levels` given both, and `ood_score` given an `ood_threshold`; their names, input and output names are public API).
Every signature runs batch norm in inference mode (running averages), so a row's outputs do not depend on the
rest of its batch. The graph holds only core TensorFlow ops: loading it needs neither this package nor
TensorFlow Probability. `export_workdir` exports the flow of a training run's checkpoint with its dequantizer
(`discrete_bits_per_dim`), `classify` and `classify_levels` for a `condition="label"` run, and `ood_score` with its threshold set
on held-out in-distribution images (`held_out_split`).

`saved_model_distribution.load_distribution` turns an export back into a read-only `tfd.Distribution`.
"""

import errno
import os
import secrets
import shutil
import stat
import typing

import numpy as np
import tensorflow as tf

from tfp_realnvp import classifier, data, ood
from tfp_realnvp.serving.serving_module import DEFAULT_MAX_NUM_SAMPLES, ServingModule
from tfp_realnvp.training import checkpoints, configs, evaluation

__all__ = ["HeldOutSplit", "WorkdirExport", "export_saved_model", "export_workdir", "held_out_split"]

# The most held-out images `export_workdir` scores for the `ood_score` threshold (the first ones of the split).
MAX_HELD_OUT_IMAGES = 10_000

# Staging directories live beside the versions; TF Serving only loads all-digit names.
_STAGING_PREFIX = ".staging-"
# TF Serving parses version directory names as int64: `007` is version 7, and larger numbers are no version.
_MAX_VERSION = 2**63 - 1


def _check_export_arguments(model_name, version):
  if not isinstance(model_name, str) or model_name in ("", ".", "..") or os.sep in model_name:
    raise ValueError(
      f"`model_name` must be a non-empty directory name without {os.sep!r}; got {model_name!r}."
    )
  if version is not None and (
    isinstance(version, bool)
    or not isinstance(version, (int, np.integer))
    or not 0 <= version <= _MAX_VERSION
  ):
    raise ValueError(
      f"`version` must be None (the next free version) or an integer in [0, 2**63 - 1]; got {version!r}."
    )


def _existing_versions(model_dir):
  """`{version: entry name}` of the entries of `model_dir` that TF Serving takes for versions.

  Those are ASCII-decimal names of int64 values (`str.isdigit` alone also accepts digits such as `²`,
  which `int` refuses), `007` being version 7.
  """
  names = (name for name in os.listdir(model_dir) if name.isascii() and name.isdigit())
  return {int(name): name for name in names if int(name) <= _MAX_VERSION}


def _check_version_free(model_dir, version):
  """Raises `FileExistsError` if `version` (None: any free one) exists in `model_dir`; returns the versions."""
  existing = _existing_versions(model_dir)
  if version is not None and version in existing:
    raise _version_exists_error(model_dir, version, existing[version])
  return existing


def _version_exists_error(model_dir, version, name):
  return FileExistsError(
    f"Version {version} already exists as {os.path.join(model_dir, name)}; an export never overwrites a "
    "version. Pass another `version`, or None for the next free one."
  )


def _make_staging_dir(model_dir):
  """Makes a new empty `.staging-*` directory in `model_dir` with `mkdir`'s mode, `0o777` less the umask.

  `tempfile.mkdtemp` would make it `0o700`, which the rename keeps: a TF Serving process running as
  another user could not read the version.
  """
  while True:
    path = os.path.join(model_dir, _STAGING_PREFIX + secrets.token_hex(8))
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue


def _set_modes_as_umask_allows(staging_dir):
  """Gives every directory under `staging_dir` its mode and every file that mode less execute permission
  (`0o755` and `0o644` under umask 022), as the process umask allows; TensorFlow makes `variables/` `0o755`
  whatever the umask."""
  directory_mode = stat.S_IMODE(os.stat(staging_dir).st_mode)
  file_mode = directory_mode & 0o666
  for root, directories, files in os.walk(staging_dir):
    for name in directories:
      os.chmod(os.path.join(root, name), directory_mode)
    for name in files:
      os.chmod(os.path.join(root, name), file_mode)


def _publish(staging_dir, model_dir, version):
  """Renames the finished export to its version directory; returns that directory.

  `rename` is atomic within a file system, so TF Serving, which watches `model_dir`, sees either
  no version or a complete one. A concurrent export that takes the same free version first
  makes the rename fail (its directory is not empty): the next free version is taken instead.
  """
  while True:
    existing = _check_version_free(model_dir, version)
    target = version if version is not None else max(existing, default=0) + 1
    if target > _MAX_VERSION:
      raise ValueError(f"{model_dir} already holds the largest version TF Serving can load, {_MAX_VERSION}.")
    path = os.path.join(model_dir, str(target))
    try:
      os.rename(staging_dir, path)
      return path
    except OSError as error:
      if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
        raise
      if version is not None:
        raise _version_exists_error(model_dir, version, str(target)) from error


def export_saved_model(
  flow,
  export_base,
  model_name="realnvp",
  version=None,
  max_num_samples=DEFAULT_MAX_NUM_SAMPLES,
  label_log_prior=None,
  dequantizer=None,
  max_flow_evaluations=None,
  ood_threshold=None,
  ood_false_positive_rate=None,
):
  """Exports `flow` to `<export_base>/<model_name>/<version>/` in TF Serving's layout.

  Args:
    flow: a `tfp_realnvp.RealNVP` (or any distribution with its `log_prob(x, training)`,
      `sample(n, seed, temperature)`, `encode`, `decode`, `event_shape`, `num_bits` and
      `conditional_event_shape`). A conditional flow's signatures take `conditional_input`.
    export_base: the directory TF Serving's `--model_base_path` points above; a local path.
    model_name: the model's directory under `export_base` (TF Serving's `--model_name`).
    version: a non-negative integer, or None for one more than the largest existing version
      (1 for the first export).
    max_num_samples: the most samples one request to the `sample` signature may ask for (default 4096,
      `serving.DEFAULT_MAX_NUM_SAMPLES`), and the most draws `K` per row one `discrete_bits_per_dim` request
      may ask for; the graph refuses more with `InvalidArgumentError`, so a server cannot be asked to exhaust
      its memory.
    label_log_prior: None, or for a flow conditioned on one-hot labels (`conditional_event_shape=
      (num_classes,)`) the prior `log p(y)`, `[num_classes]` (its `exp` summing to 1; a `Trainer`'s
      `label_log_prior`): adds the `classify` signature, `log p(y | x)` by Bayes with this `p(y)`.
    dequantizer: None, or for a flow of pixel data (`num_bits` not None) a `dequantization.UniformDequantizer`
      or `VariationalDequantizer` of its event shape (a `Trainer`'s `dequantizer`): adds the
      `discrete_bits_per_dim` signature, the importance-weighted bound on the discrete image's
      `-log2 P(levels) / D` (`dequantization.importance_weighted_bits_per_dim`); the `log_prob` signature stays
      the continuous density of dequantized values. With `label_log_prior` too, adds `classify_levels`:
      `classify` of integer pixel levels, dequantized by this `q`.
    max_flow_evaluations: the most flow evaluations one request may cost (rows; samples; rows times classes
      for `classify`; rows times draws for `discrete_bits_per_dim`, times classes too for `classify_levels`);
      None (the default) derives it from the flow's operations per row (`serving_module.default_max_flow_evaluations`). `saved_model_cli show --all`
      prints it with `max_num_samples` (the `limits` function).
    ood_threshold: None, or for a flow of pixel data (unconditional, or class-conditional with
      `label_log_prior`: its marginal `p(x)`) a finite threshold on
      `ood.complexity_corrected_score`: adds the `ood_score` signature (`score`, and `is_outlier` for a score
      above it). Set it from held-out in-distribution scores with `ood.threshold_at_false_positive_rate`.
    ood_false_positive_rate: the share of held-out scores above `ood_threshold`, recorded beside it (the
      `ood_settings` function); None if unknown.

  Returns:
    The version directory written.

  Raises:
    FileExistsError: `version` is given and exists (also as a name with leading zeros, such as `007`,
      which TF Serving loads as version 7); nothing is changed.

  The SavedModel is written to a staging directory beside the versions and renamed into place
  only once complete, so an interrupted export leaves no version directory. Its directories and files
  are as readable as the process umask allows (`0o755` and `0o644` under umask 022), so a server
  running as another user can load them. A process killed mid-way can leave a `.staging-*` directory,
  which TF Serving ignores; delete it at will.
  """
  _check_export_arguments(model_name, version)
  module = ServingModule(
    flow,
    max_num_samples,
    label_log_prior,
    dequantizer,
    max_flow_evaluations=max_flow_evaluations,
    ood_threshold=ood_threshold,
    ood_false_positive_rate=ood_false_positive_rate,
  )
  model_dir = os.path.join(os.fspath(export_base), model_name)
  os.makedirs(model_dir, exist_ok=True)
  _check_version_free(model_dir, version)  # before the slow part; checked again when publishing
  staging_dir = _make_staging_dir(model_dir)
  try:
    tf.saved_model.save(module, staging_dir, signatures=module.signatures())
    _set_modes_as_umask_allows(staging_dir)
    return _publish(staging_dir, model_dir, version)
  except BaseException:
    shutil.rmtree(staging_dir, ignore_errors=True)
    raise


class WorkdirExport(typing.NamedTuple):
  """What `export_workdir` exported: the version directory written, the checkpoint exported, the run's
  dataset and the flow's number of trainable parameters; the `ood_score` threshold and the `HeldOutSplit` it
  was set on (None for an export made otherwise)."""

  path: str
  checkpoint: str
  dataset: str
  num_parameters: int
  ood_threshold: float | None = None
  ood_split: "HeldOutSplit | None" = None


class HeldOutSplit(typing.NamedTuple):
  """The split an `ood_score` threshold is set on: its `name`, why it was chosen (`reason`), and whether the
  flow never trained on it (`held_out`)."""

  name: str
  reason: str
  held_out: bool


def _split_name(split):
  return split.split("[", 1)[0].strip()


def held_out_split(config, ood_split=None):
  """The split of `config`'s dataset whose scores set an export's `ood_score` threshold; never a test split.

  `ood_split` when given (a split named `test` is refused); else the run's `eval_split` when the config names
  one that is not a test split (a validation split such as `train[50000:]` beside `train_split=train[:50000]`:
  held out by the run's own choice); else the run's training split, which the flow has seen, so its scores are
  lower than new in-distribution images' and the threshold flags more of those than the stated rate
  (`held_out=False`; train with a validation `eval_split`, or pass `ood_split`, for a held-out threshold).
  """
  if ood_split is not None:
    if _split_name(ood_split) == "test":
      raise ValueError(f"`ood_split` must not be a test split; got {ood_split!r}.")
    return HeldOutSplit(ood_split, "given", held_out=True)
  if config.eval_split is not None and _split_name(config.eval_split) != "test":
    return HeldOutSplit(config.eval_split, "the run's eval split", held_out=True)
  train_split = (
    config.train_split
    or data.dataset_spec(config.dataset, image_size=config.image_size, data_dir=config.data_dir).train_split
  )
  return HeldOutSplit(train_split, "the run's training split: no validation split held out", held_out=False)


def _held_out_scores(flow, dequantizer, config, split, label_log_prior):
  """`ood.complexity_corrected_score` of the first `MAX_HELD_OUT_IMAGES` images of `split`, a NumPy array
  (`label_log_prior` for a class-conditional flow: its marginal `p(x)`)."""
  images = data.load(
    config.dataset,
    split,
    batch_size=256,
    training=False,
    data_dir=config.data_dir,
    image_size=config.image_size,
    seed=config.seed,
  )
  score = tf.function(
    lambda x: ood.complexity_corrected_score(
      flow, dequantizer, ood.pixel_levels(x), label_log_prior=label_log_prior
    )
  )
  scores, count = [], 0
  for batch in images:
    batch = batch[: MAX_HELD_OUT_IMAGES - count]
    scores.append(score(batch).numpy())
    count += len(scores[-1])
    if count >= MAX_HELD_OUT_IMAGES:
      break
  return np.concatenate(scores)


def export_workdir(
  workdir,
  export_base,
  model_name="realnvp",
  version=None,
  checkpoint=None,
  max_num_samples=DEFAULT_MAX_NUM_SAMPLES,
  max_flow_evaluations=None,
  ood_split=None,
  ood_false_positive_rate=ood.DEFAULT_FALSE_POSITIVE_RATE,
):
  """Exports a training run's flow and dequantizer (see `checkpoints.restore_run`) with `export_saved_model`;
  returns a `WorkdirExport`.

  The export has the `discrete_bits_per_dim` signature with the run's own dequantizer, a uniform one too:
  with uniform `q` the importance-weighted bound is still the kind of figure for discrete images that the
  run's `metrics.json` reports (at `K = 1` the usual bits/dim of `levels + u`, tighter for larger `K`; for a
  conditional flow, of `P(levels | conditional_input)`), while the `log_prob` signature only scores
  dequantized values. A `condition="label"` run's export has the `classify` and `classify_levels`
  signatures, with the label frequencies of the run's training split as `p(y)`, as training used them
  (`data.label_counts`).

  The export has the `ood_score` signature (for a `condition="label"` run, of the marginal `p(x)` with that
  `p(y)`), its threshold flagging `ood_false_positive_rate` of the scores of the first `MAX_HELD_OUT_IMAGES`
  images of `held_out_split(config, ood_split)` (never a test split): reading them needs the run's data where
  the export runs.
  """
  flow, dequantizer, checkpoint = checkpoints.restore_run(workdir, checkpoint)
  with tf.io.gfile.GFile(checkpoints.config_path(workdir)) as file:
    config = configs.from_json(file.read())
  label_log_prior = None
  if config.condition == "label":  # `p(y)` as the run's evaluation took it
    label_log_prior = classifier.log_prior_of_counts(evaluation.train_label_counts(config))
  split = held_out_split(config, ood_split)
  scores = _held_out_scores(flow, dequantizer, config, split.name, label_log_prior)
  ood_threshold = ood.threshold_at_false_positive_rate(scores, ood_false_positive_rate)
  path = export_saved_model(
    flow,
    export_base,
    model_name,
    version,
    max_num_samples,
    label_log_prior,
    dequantizer,
    max_flow_evaluations=max_flow_evaluations,
    ood_threshold=ood_threshold,
    ood_false_positive_rate=ood_false_positive_rate,
  )
  num_parameters = sum(variable.shape.num_elements() for variable in flow.trainable_variables)
  return WorkdirExport(path, checkpoint, config.dataset, num_parameters, ood_threshold, split)

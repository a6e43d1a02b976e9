"""SavedModel export of a RealNVP flow for TF Serving, the TensorFlow C API and plain TensorFlow.

`export_saved_model` writes `<export_base>/<model_name>/<version>/` with these signatures (their
names, input and output names are public API):

| signature | inputs | outputs |
|---|---|---|
| `serving_default`, `log_prob` | `x` float32 `[batch, *event_shape]` | `log_prob` float32 `[batch]`; image flows also `bits_per_dim` float32 `[batch]` |
| `sample` | `num_samples` int32 `[]`, `temperature` float32 `[]`, `seed` int32 `[2]` | `samples` float32 `[num_samples, *event_shape]`; image flows also `images` uint8 |
| `encode` | `x` float32 `[batch, *event_shape]` | `z` float32 `[batch, *event_shape]` |
| `decode` | `z` float32 `[batch, *event_shape]` | `x` float32 `[batch, *event_shape]` |

Every signature runs batch norm in inference mode (running averages), so a row's outputs do not
depend on the rest of its batch. The graph holds only core TensorFlow ops: loading it needs neither
this package nor TensorFlow Probability.

`load_distribution` turns an export back into a read-only `tfd.Distribution`.
"""

import errno
import math
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = [
  "SIGNATURE_NAMES",
  "SavedModelDistribution",
  "ServingModule",
  "export_saved_model",
  "export_workdir",
  "load_distribution",
  "restore_flow",
  "uint8_images",
]

SIGNATURE_NAMES = ("serving_default", "log_prob", "sample", "encode", "decode")

# Staging directories live beside the versions; TF Serving only loads all-digit names.
_STAGING_PREFIX = ".staging-"


def uint8_images(samples, num_bits):
  """Maps pixel values in `[0, 2**num_bits)` to viewable uint8 images.

  `images = round(floor(clip(samples, 0, L)) * 255 / L)` with `L = 2**num_bits - 1`: the sample's
  discrete pixel level, stretched to `0..255` so that data with fewer than 8 bits (e.g. 4-bit
  digits, levels 0..15 -> 0, 17, ..., 255) view like 8-bit images. For 8-bit data it is
  `floor(clip(samples, 0, 255))`. NaN maps to 0.
  """
  max_level = 2.0**num_bits - 1.0
  samples = tf.convert_to_tensor(samples)
  levels = tf.floor(tf.clip_by_value(samples, 0.0, max_level))
  levels = tf.where(tf.math.is_nan(samples), tf.zeros_like(levels), levels)
  return tf.cast(tf.round(levels * (255.0 / max_level)), tf.uint8)


class ServingModule(tf.Module):
  """A flow's inference-mode computations as `tf.function`s with fixed input signatures.

  `log_prob` gives a defined value off the support instead of whatever the network computes
  there: a row holding NaN scores NaN; any other row outside the support (an infinite value, or
  for image flows a pixel outside `[0, 2**num_bits)`) scores `-inf` (`bits_per_dim` `+inf`).
  Inputs whose shape is not `[batch, *event_shape]` fail with `InvalidArgumentError`, also in
  the C++ loader, which does not check shapes against the signature. `sample` rejects a negative
  `num_samples` and a negative or non-finite `temperature` with `InvalidArgumentError`.
  """

  def __init__(self, flow, name="realnvp_serving"):
    super().__init__(name=name)
    event_shape = tf.TensorShape(flow.event_shape)
    if not event_shape.is_fully_defined():
      raise ValueError(f"`flow.event_shape` must be fully defined to export; got {event_shape}.")
    self.flow = flow
    self._event_shape = event_shape.as_list()
    self._is_image = bool(flow.is_image)
    self._num_bits = flow.num_bits
    batch_spec = [None, *self._event_shape]
    self.log_prob = tf.function(
      self._log_prob, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x")]
    )
    self.sample = tf.function(
      self._sample,
      input_signature=[
        tf.TensorSpec([], tf.int32, name="num_samples"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([2], tf.int32, name="seed"),
      ],
    )
    self.encode = tf.function(self._encode, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="x")])
    self.decode = tf.function(self._decode, input_signature=[tf.TensorSpec(batch_spec, tf.float32, name="z")])

  def signatures(self):
    """The `{signature name: concrete function}` map for `tf.saved_model.save`."""
    log_prob = self.log_prob.get_concrete_function()
    return {
      "serving_default": log_prob,
      "log_prob": log_prob,
      "sample": self.sample.get_concrete_function(),
      "encode": self.encode.get_concrete_function(),
      "decode": self.decode.get_concrete_function(),
    }

  def _event_rows(self, rows):
    """`rows`, checked at run time to be `[batch, *event_shape]`.

    The C++ loader behind TF Serving feeds tensors without checking them against the
    signature, and convolutions take any image size: the graph checks. Every op that reads
    an input reads this check's output, so a wrong shape always fails here, by name.
    """
    return tf.ensure_shape(rows, [None, *self._event_shape])

  def _log_prob(self, x):
    x = self._event_rows(x)
    log_prob = self.flow.log_prob(tf.cast(x, self.flow.dtype), training=False)
    log_prob = tf.cast(log_prob, tf.float32)
    # Image flows score pixels outside [0, 2**num_bits) -inf themselves; this adds the rule
    # for any flow: a row holding NaN scores NaN, one holding +-inf scores -inf.
    event_axes = list(range(1, 1 + len(self._event_shape)))
    log_prob = tf.where(tf.reduce_all(tf.math.is_finite(x), event_axes), log_prob, -np.inf)
    log_prob = tf.where(tf.reduce_any(tf.math.is_nan(x), event_axes), np.nan, log_prob)
    outputs = {"log_prob": log_prob}
    if self._is_image:
      num_dims = math.prod(self._event_shape)
      outputs["bits_per_dim"] = -log_prob / (num_dims * math.log(2.0))
    return outputs

  def _sample(self, num_samples, temperature, seed):
    checks = [
      tf.debugging.assert_non_negative(num_samples, message="`num_samples` must be non-negative"),
      tf.debugging.assert_non_negative(temperature, message="`temperature` must be non-negative"),
      tf.debugging.assert_all_finite(temperature, message="`temperature` must be finite"),
    ]
    with tf.control_dependencies(checks):
      samples = self.flow.sample(
        num_samples,
        seed=seed,
        temperature=tf.cast(temperature, self.flow.dtype),
      )
    samples = self._event_rows(tf.cast(samples, tf.float32))
    outputs = {"samples": samples}
    if self._is_image:
      outputs["images"] = uint8_images(samples, self._num_bits)
    return outputs

  def _encode(self, x):
    x = self._event_rows(x)
    z = self.flow.encode(tf.cast(x, self.flow.dtype))
    return {"z": self._event_rows(tf.cast(z, tf.float32))}

  def _decode(self, z):
    z = self._event_rows(z)
    x = self.flow.decode(tf.cast(z, self.flow.dtype))
    return {"x": self._event_rows(tf.cast(x, tf.float32))}


def _check_export_arguments(model_name, version):
  if not isinstance(model_name, str) or model_name in ("", ".", "..") or os.sep in model_name:
    raise ValueError(
      f"`model_name` must be a non-empty directory name without {os.sep!r}; got {model_name!r}."
    )
  if version is not None and (
    isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0
  ):
    raise ValueError(
      f"`version` must be None (the next free version) or a non-negative integer; got {version!r}."
    )


def _existing_versions(model_dir):
  return [int(name) for name in os.listdir(model_dir) if name.isdigit()]


def _version_exists_error(path):
  return FileExistsError(
    f"Version directory {path} already exists; an export never overwrites a version. "
    "Pass another `version`, or None for the next free one."
  )


def _publish(staging_dir, model_dir, version):
  """Renames the finished export to its version directory; returns that directory.

  `rename` is atomic within a file system, so TF Serving, which watches `model_dir`, sees either
  no version or a complete one. A concurrent export that takes the same free version first
  makes the rename fail (its directory is not empty): the next free version is taken instead.
  """
  while True:
    target = version if version is not None else max(_existing_versions(model_dir), default=0) + 1
    path = os.path.join(model_dir, str(target))
    if os.path.lexists(path):
      if version is not None:
        raise _version_exists_error(path)
      continue
    try:
      os.rename(staging_dir, path)
      return path
    except OSError as error:
      if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
        raise
      if version is not None:
        raise _version_exists_error(path) from error


def export_saved_model(flow, export_base, model_name="realnvp", version=None):
  """Exports `flow` to `<export_base>/<model_name>/<version>/` in TF Serving's layout.

  Args:
    flow: a `tfp_realnvp.RealNVP` (or any distribution with its `log_prob(x, training)`,
      `sample(n, seed, temperature)`, `encode`, `decode`, `event_shape`, `is_image` and
      `num_bits`).
    export_base: the directory TF Serving's `--model_base_path` points above; a local path.
    model_name: the model's directory under `export_base` (TF Serving's `--model_name`).
    version: a non-negative integer, or None for one more than the largest existing version
      (1 for the first export).

  Returns:
    The version directory written.

  Raises:
    FileExistsError: `version` is given and its directory exists; nothing is changed.

  The SavedModel is written to a staging directory beside the versions and renamed into place
  only once complete, so an interrupted export leaves no version directory. A process killed
  mid-way can leave a `.staging-*` directory, which TF Serving ignores; delete it at will.
  """
  _check_export_arguments(model_name, version)
  model_dir = os.path.join(os.fspath(export_base), model_name)
  os.makedirs(model_dir, exist_ok=True)
  if version is not None and os.path.lexists(os.path.join(model_dir, str(version))):
    raise _version_exists_error(os.path.join(model_dir, str(version)))
  module = ServingModule(flow)
  staging_dir = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=model_dir)
  try:
    tf.saved_model.save(module, staging_dir, signatures=module.signatures())
    return _publish(staging_dir, model_dir, version)
  except BaseException:
    shutil.rmtree(staging_dir, ignore_errors=True)
    raise


def restore_flow(workdir, checkpoint=None):
  """Rebuilds the flow of the training run in `workdir` and restores a checkpoint into it.

  The flow is built from `workdir/config.json` as `train_lib.train_and_evaluate` builds it;
  `checkpoint` (a checkpoint prefix such as `workdir/checkpoints/ckpt-3000`) defaults to the
  latest in `workdir/checkpoints`. Returns `(flow, checkpoint)`.

  Raises:
    FileNotFoundError: no config or no checkpoint.
    ValueError: the checkpoint does not hold this flow's variables.
  """
  # The training-side modules (tfds among them) load only for this.
  from tfp_realnvp import configs, data
  from tfp_realnvp.flows import RealNVP

  workdir = os.fspath(workdir)
  config_path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.exists(config_path):
    raise FileNotFoundError(
      f"`workdir` must be a training run's directory with a config.json; {config_path} does not exist."
    )
  with tf.io.gfile.GFile(config_path) as file:
    config = configs.from_json(file.read())
  if checkpoint is None:
    checkpoint = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if checkpoint is None:
      raise FileNotFoundError(f"`workdir` {workdir} has no checkpoint under checkpoints/.")
  spec = data.dataset_spec(config.dataset, image_size=config.image_size, data_dir=config.data_dir)
  overrides = dict(config.model_overrides)
  if config.image_size is not None:
    overrides.setdefault("event_shape", spec.image_shape)
  flow = RealNVP.from_preset(config.preset or spec.preset, **overrides)
  try:
    # The checkpoint also holds the optimizer and step, which serving does not need.
    status = tf.train.Checkpoint(flow=flow).restore(checkpoint).expect_partial()
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    raise ValueError(
      f"`checkpoint` {checkpoint} does not hold the flow that {config_path} describes: "
      f"{str(error).splitlines()[0]}"
    ) from error
  return flow, checkpoint


def export_workdir(workdir, export_base, model_name="realnvp", version=None, checkpoint=None):
  """Exports a training run's flow (see `restore_flow`); returns `(version directory, checkpoint)`."""
  flow, checkpoint = restore_flow(workdir, checkpoint)
  return export_saved_model(flow, export_base, model_name, version), checkpoint


class SavedModelDistribution(tfd.Distribution):
  """A read-only distribution backed by a SavedModel from `export_saved_model`.

  `log_prob` takes any batch shape `[..., *event_shape]`; `sample` draws stateless samples at
  temperature 1 from the exported `sample` signature (TFP seed semantics: an int, None, or an
  int32 `[2]` stateless seed). The batch shape is `[]`. The flow's weights are fixed: the
  distribution has no trainable variables. Gradients of `log_prob` with respect to its input
  flow through the restored graph, so it can serve as a learned prior.
  """

  def __init__(self, path, validate_args=False, allow_nan_stats=True, name="SavedModelDistribution"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._path = os.fspath(path)
      self._saved_model = tf.saved_model.load(self._path)
      missing = sorted(set(SIGNATURE_NAMES) - set(self._saved_model.signatures))
      if missing:
        raise ValueError(
          f"`path` must hold a SavedModel from `export_saved_model` with signatures "
          f"{list(SIGNATURE_NAMES)}; {self._path} lacks {missing}."
        )
      self._log_prob_signature = self._saved_model.signatures["log_prob"]
      self._sample_signature = self._saved_model.signatures["sample"]
      x_spec = self._log_prob_signature.structured_input_signature[1]["x"]
      self._static_event_shape = x_spec.shape[1:]
      super().__init__(
        dtype=tf.float32,
        reparameterization_type=tfd.NOT_REPARAMETERIZED,
        validate_args=validate_args,
        allow_nan_stats=allow_nan_stats,
        parameters=parameters,
        name=name,
      )

  @property
  def path(self):
    return self._path

  def _event_shape(self):
    return self._static_event_shape

  def _event_shape_tensor(self):
    return tf.constant(self._static_event_shape.as_list(), tf.int32)

  def _batch_shape(self):
    return tf.TensorShape([])

  def _batch_shape_tensor(self):
    return tf.constant([], tf.int32)

  def _log_prob(self, x):
    x = tf.convert_to_tensor(x, tf.float32)
    event_rank = self._static_event_shape.rank
    sample_shape = tf.shape(x)[: tf.rank(x) - event_rank]
    rows = tf.reshape(x, [-1, *self._static_event_shape.as_list()])
    log_prob = self._log_prob_signature(x=rows)["log_prob"]
    return tf.reshape(log_prob, sample_shape)

  def _sample_n(self, n, seed=None):
    samples = self._sample_signature(
      num_samples=tf.cast(n, tf.int32),
      temperature=tf.constant(1.0),
      seed=tfp.random.sanitize_seed(seed),
    )
    return samples["samples"]


def load_distribution(path):
  """Loads an export of `export_saved_model` as a read-only `tfd.Distribution`."""
  return SavedModelDistribution(path)

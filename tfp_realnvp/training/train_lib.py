"""`train_and_evaluate(config, workdir)`: maximum-likelihood training of a RealNVP flow under any
`tf.distribute` strategy, with checkpoints, TensorBoard, test bits/dim and sample grids in `workdir`.

```python
from tfp_realnvp.training import configs, train_lib
result = train_lib.train_and_evaluate(configs.get_config(), "runs/digits")
result.metrics["test_bits_per_dim"]
```

`workdir` afterwards holds `config.json`, `checkpoints/`, `tensorboard/` (runs `train` and `eval`, with the same
tags), `metrics.json`, `samples.png`, and the training seconds: `train_seconds.json` (at each checkpoint) and
`validation.jsonl` (at each evaluation; `wall_time.validation_curve` reads it back).
Running again with the same workdir resumes from the latest checkpoint.
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import typing

import numpy as np
import tensorflow as tf

from tfp_realnvp import data, dequantization
from tfp_realnvp.internal import cpu_features
from tfp_realnvp.training import (
  batch_norm_statistics,
  checkpoints,
  configs,
  evaluation,
  flow_builder,
  losses,
  optimization,
  reporting,
  strategies,
  wall_time,
  weight_averaging,
  workdirs,
)
from tfp_realnvp.training.configs import ConfigError

__all__ = [
  "IMPORTANCE_SEED",
  "NonFiniteLossError",
  "SAMPLE_SEED",
  "TrainResult",
  "Trainer",
  "build_trainer",
  "load_split",
  "statistics_batches",
  "strategy_for",
  "train_and_evaluate",
]

# The checkpoint's child holding `Trainer.batch_norm_statistics` (`checkpoints.restore_run` reads it).
CHECKPOINT_STATISTICS = checkpoints.BATCH_NORM_STATISTICS
SAMPLE_SEED = (2016, 5)  # every sample grid of every run uses this stateless seed
IMPORTANCE_SEED = evaluation.IMPORTANCE_SEED  # the rotations of every importance-weighted evaluation


class NonFiniteLossError(RuntimeError):
  """Training stopped on non-finite values; the checkpoints on disk hold only finite weights."""


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns: the trained flow (with the weights it was evaluated with: the averages
  when `config.ema_decay` is set, and the batch-norm statistics re-estimated for them with
  `config.batch_norm_batches`), its step and the final metrics."""

  flow: object
  step: int
  metrics: dict


class Trainer:
  """A flow with its optimizer, step counter and checkpoint, built in `strategy.scope()`.

  `make_flow()` and `make_optimizer()` (default: the paper's Adam) are called inside the scope.

  `train_step(batch)` takes one distributed global batch and returns `(bits_per_dim, applied)`: the mean
  bits/dim of the global batch and whether the update was applied. The loss is `losses.bits_per_dim_loss`:
  `sum(bits_per_dim) / global_batch_size + l2_coefficient * sum ||regularized variables||^2`, averaged over
  the global batch whatever the number of replicas; the optimizer sums the replicas' gradients and clips the
  sum by global norm. A step whose loss or gradient is not finite changes nothing (neither weights, optimizer
  state nor batch-norm running averages) and returns `applied=False`.

  `label_counts` (int `[num_classes]`, the training split's, as `data.label_counts` gives) makes a
  class-conditional trainer for a flow with `conditional_event_shape == (num_classes,)`: batches are
  `(images, labels)`, the context is `one_hot(labels)`, evaluation gives the marginal bits/dim
  `-log2 sum_y p(x | y) p(y) / D` with `p(y) = label_counts / sum(label_counts)` (see `evaluate_metrics`), and
  sample grids have one row per class. `label_dropout` is the share of training images whose context is all
  zeros instead of their one-hot label (one uniform draw per image and step); evaluation always gives the label.
  `class_loss_weight > 0` (no label dropout; a flow with `context_enters='base'`) trains the hybrid objective
  `losses.hybrid_loss`: the bits/dim plus that weight times `-log p(label | x)` in nats.

  `dequantization` (`'uniform'` or `'variational'`, see `dequantization.make_dequantizer`) is the dequantizer
  `q(u | v)` of the discrete images `v = floor(x)` of the batches, built in the scope beside the flow
  (`trainer.dequantizer`). The loss's data term is then the bound `-(log p(v + u) - log q(u | v)) / (D ln 2)`,
  `u` the dequantizer's offsets for the batch's own noise `x - v` (`losses.bits_per_dim_loss`); a variational
  dequantizer trains jointly with the flow (its variables in the optimizer and the checkpoint, as
  `dequantizer`). With `'uniform'` everything is as without a dequantizer, checkpoints included.

  `loss_scale`: an `optimization.DynamicLossScale`, None, or `'auto'` (the default: dynamic loss scaling when
  the flow's conditioners compute in float16, none otherwise). `jit_compile=True` compiles the train step with
  XLA (slower on CPUs, see `docs/speed.md`).

  `ema_decay` in `(0, 1)` keeps `weight_average`, a `weight_averaging.WeightAverage` of the flow's trainable
  weights, updated after every applied step (not after a skipped one) and checkpointed with them;
  `evaluate_metrics` and `sample_grid` then use the averages (`evaluation_weights`), while training goes on
  with the flow's own weights. 0 (the default) keeps none.

  `batch_norm_batches > 0` keeps `batch_norm_statistics`, a `batch_norm_statistics.BatchNormStatistics` of
  every batch norm's running averages (the flow's and the dequantizer's) re-estimated for the evaluated weights
  by `estimate_batch_norm_statistics` (the mean batch statistics of that many training-mode passes) and
  checkpointed with the step they are for; while they are for the current step, `evaluation_weights` (so
  evaluation and samples) uses them instead of the training's own running averages, which are never changed.
  0 (the default) keeps none: evaluation uses the training's running averages.
  """

  def __init__(
    self,
    strategy,
    make_flow,
    *,
    global_batch_size,
    make_optimizer=optimization.adam,
    l2_coefficient=5e-5,
    label_counts=None,
    loss_scale="auto",
    jit_compile=False,
    ema_decay=0.0,
    dequantization="uniform",
    label_dropout=0.0,
    batch_norm_batches=0,
    class_loss_weight=0.0,
  ):
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    self.l2_coefficient = l2_coefficient
    self.label_log_prior = evaluation.label_log_prior(label_counts)
    if not (0.0 <= label_dropout < 1.0 and (label_counts is not None or not label_dropout)):
      raise ValueError(
        f"`label_dropout` must be in [0, 1), and 0 without `label_counts` (a class-conditional trainer); got "
        f"{label_dropout!r}."
      )
    self.label_dropout = float(label_dropout)
    self.num_classes = None if label_counts is None else len(self.label_log_prior)
    if not (
      isinstance(class_loss_weight, (int, float))
      and class_loss_weight >= 0
      and (not class_loss_weight or (label_counts is not None and not label_dropout))
    ):
      raise ValueError(
        "`class_loss_weight` must be a number >= 0, and 0 without `label_counts` (a class-conditional trainer) "
        f"or with `label_dropout`; got {class_loss_weight!r}."
      )
    self.class_loss_weight = float(class_loss_weight)
    if (
      isinstance(batch_norm_batches, bool)
      or not isinstance(batch_norm_batches, int)
      or batch_norm_batches < 0
    ):
      raise ValueError(f"`batch_norm_batches` must be an integer >= 0; got {batch_norm_batches!r}.")
    self.batch_norm_batches = batch_norm_batches
    # Variables and optimizer slots created in the scope are mirrored across replicas (and workers).
    with strategy.scope():
      self.flow = make_flow()
      self.dequantizer = _make_dequantizer(dequantization, self.flow)
      self.optimizer = make_optimizer()
      self.optimizer.build(self.trainable_variables)
      self.step = tf.Variable(
        0, dtype=tf.int64, trainable=False, name="step", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA
      )
      if isinstance(loss_scale, str) and loss_scale == "auto":
        loss_scale = optimization.DynamicLossScale() if _computes_in_float16(self.flow) else None
      elif not (loss_scale is None or isinstance(loss_scale, optimization.DynamicLossScale)):
        raise TypeError(
          f"`loss_scale` must be 'auto', None or an optimization.DynamicLossScale; got {loss_scale!r}."
        )
      self.loss_scale = loss_scale
      self.weight_average = (
        weight_averaging.WeightAverage(self.flow.trainable_variables, ema_decay) if ema_decay else None
      )
      optional = {} if loss_scale is None else {"loss_scale": loss_scale}
      if self.weight_average is not None:
        optional["weight_average"] = self.weight_average
      if self.dequantizer.variables:  # a uniform dequantizer has none: checkpoints stay as they were
        optional["dequantizer"] = self.dequantizer
      running_averages = [
        variable for variable in (*self.flow.variables, *self.dequantizer.variables) if not variable.trainable
      ]
      self.batch_norm_statistics = None
      if batch_norm_batches and running_averages:
        self.batch_norm_statistics = batch_norm_statistics.BatchNormStatistics(running_averages)
        optional[CHECKPOINT_STATISTICS] = self.batch_norm_statistics
      self.checkpoint = tf.train.Checkpoint(
        flow=self.flow, optimizer=self.optimizer, step=self.step, **optional
      )
    if self.num_classes is not None and self.flow.conditional_event_shape != (self.num_classes,):
      raise ValueError(
        f"`label_counts` gives {self.num_classes} classes, so the flow must have "
        f"`conditional_event_shape=({self.num_classes},)`; it has {self.flow.conditional_event_shape}."
      )
    if self.class_loss_weight and self.flow.context_enters != "base":
      raise ValueError(
        "`class_loss_weight` needs a flow whose label enters only the base (`context_enters='base'`, one pass "
        f"scores every class); this flow's `context_enters` is {self.flow.context_enters!r}."
      )
    self._running_averages = running_averages
    self.train_step = tf.function(self._train_step, jit_compile=jit_compile)
    self._statistics_pass = batch_norm_statistics.pass_function(strategy, self._replica_loss_terms)
    self.evaluator = evaluation.Evaluator(
      strategy=strategy, flow=self.flow, dequantizer=self.dequantizer, label_log_prior=self.label_log_prior
    )
    self._sample_functions = {}  # by number of samples

  @property
  def trainable_variables(self):
    """What the optimizer trains: the flow's trainable variables, then the dequantizer's."""
    return (*self.flow.trainable_variables, *self.dequantizer.trainable_variables)

  def _train_step(self, batch):
    # The forward pass moves the batch-norm running averages; a skipped step puts them back. Every replica
    # holds the same averages (batch moments are pooled), so the first local copy is saved without a reduce.
    saved_averages = [
      tf.identity(self.strategy.experimental_local_results(variable)[0])
      for variable in self._running_averages
    ]
    gradients, bits_per_dim, is_finite = self.strategy.run(self._replica_gradients, args=(batch,))
    # All-reduced, so every replica and worker holds the same value and takes the same branch.
    is_finite = self.strategy.experimental_local_results(is_finite)[0]

    def apply():
      self.strategy.run(self._replica_apply, args=(gradients,))
      if self.weight_average is not None:
        self.weight_average.update()
      return tf.constant(True)

    def skip():
      for variable, value in zip(self._running_averages, saved_averages):
        variable.assign(value)
      return tf.constant(False)

    applied = tf.cond(is_finite, apply, skip)
    if self.loss_scale is not None:
      self.loss_scale.update(is_finite)
    self.step.assign_add(1)
    return self.strategy.experimental_local_results(bits_per_dim)[0], applied

  def _images_and_context(self, batch):
    """`(images, conditional_input)` of a per-replica batch: the one-hot label for a class-conditional trainer."""
    if self.num_classes is None:
      return batch, None
    images, labels = batch
    return images, tf.one_hot(labels, self.num_classes, dtype=self.flow.dtype)

  def _replica_loss_terms(self, batch):
    """The training-mode `losses.BitsPerDimLoss` of a per-replica batch (moving the running averages)."""
    if self.class_loss_weight:
      images, labels = batch
      return losses.hybrid_loss(
        self.flow,
        images,
        labels,
        self.label_log_prior,
        self.class_loss_weight,
        self.l2_coefficient,
        self.global_batch_size,
        dequantizer=self.dequantizer,
      )
    images, context = self._images_and_context(batch)
    if self.label_dropout:
      # One draw per image: its whole one-hot label kept, or all zeros.
      kept = tf.random.uniform(tf.shape(context)[:1], dtype=context.dtype) >= self.label_dropout
      context = context * tf.cast(kept, context.dtype)[:, tf.newaxis]
    return losses.bits_per_dim_loss(
      self.flow,
      images,
      self.l2_coefficient,
      self.global_batch_size,
      conditional_input=context,
      dequantizer=self.dequantizer,
    )

  def _replica_gradients(self, batch):
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
      loss_terms = self._replica_loss_terms(batch)
      data_loss, loss = loss_terms.mean_bits_per_dim, loss_terms.total
      # Dynamic loss scaling: `d(scale * loss) / scale`, so float16 gradients stay above underflow.
      scale = None if self.loss_scale is None else tf.convert_to_tensor(self.loss_scale.scale)
      differentiated = loss if scale is None else scale * loss
    gradients = tape.gradient(differentiated, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    if scale is not None:
      gradients = [gradient / scale for gradient in gradients]
    squared_norm = tf.add_n([tf.reduce_sum(tf.square(gradient)) for gradient in gradients])
    context = tf.distribute.get_replica_context()
    global_bits_per_dim, global_loss, global_squared_norm = context.all_reduce(
      tf.distribute.ReduceOp.SUM, [data_loss, loss, squared_norm]
    )
    is_finite = tf.math.is_finite(global_loss) & tf.math.is_finite(global_squared_norm)
    return gradients, global_bits_per_dim, is_finite

  def restore(self, path):
    """Restores the checkpoint file `path` (flow, optimizer, step and loss scale) in the scope; returns its step.

    A checkpoint without re-estimated batch-norm statistics (written with `batch_norm_batches=0` or before
    there were any) leaves `batch_norm_statistics` for no step.

    Raises:
      ConfigError: the checkpoint is not of this model.
    """
    checkpoint = self.checkpoint
    if self.batch_norm_statistics is not None:
      self.batch_norm_statistics.step.assign(-1)
      if not checkpoints.holds(path, CHECKPOINT_STATISTICS):
        children = tf.train.TrackableView(checkpoint).children(checkpoint)
        checkpoint = tf.train.Checkpoint(
          **{name: child for name, child in children.items() if name != CHECKPOINT_STATISTICS}
        )
    with self.strategy.scope():  # so restored optimizer slots are mirrored like the variables
      checkpoints.restore(
        checkpoint,
        path,
        f"The checkpoint {path} does not match this model (was the workdir used with another config?)",
        whole_run=True,
      )
    return int(self.step.numpy())

  def _replica_apply(self, gradients):
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

  @contextlib.contextmanager
  def evaluation_weights(self):
    """A context in which the flow holds the weights to evaluate with: the averages of `weight_average` when
    the trainer keeps one, else its own; and the batch norms the running averages `batch_norm_statistics`
    re-estimated for them when these are for the current step (`estimate_batch_norm_statistics`), else the
    training's own. On leaving it the flow's own weights and running averages come back."""
    with contextlib.ExitStack() as stack:
      if self.weight_average is not None:
        stack.enter_context(self.weight_average.applied())
      statistics = self.batch_norm_statistics
      if statistics is not None and statistics.is_for(int(self.step.numpy())):
        stack.enter_context(statistics.applied())
      yield

  def estimate_batch_norm_statistics(self, make_batches):
    """Re-estimates `batch_norm_statistics` for the current step with the weights evaluated (the averages of
    `weight_average` when kept): the mean batch statistics of `batch_norm_batches` training-mode passes over
    the distributed batches of the iterator `make_batches()` (training batches, as `train_step` takes them),
    updating no weight and leaving the training's own running averages as they were.

    Returns None when there is nothing to do (`batch_norm_batches=0`, no batch norm, or already estimated for
    this step: `make_batches` is then not called), else whether the estimate is finite (if not, evaluation
    uses the training's running averages).
    """
    statistics, step = self.batch_norm_statistics, int(self.step.numpy())
    if statistics is None or statistics.is_for(step):
      return None
    with contextlib.nullcontext() if self.weight_average is None else self.weight_average.applied():
      return statistics.estimate(self._statistics_pass, make_batches(), self.batch_norm_batches, step)

  def evaluate(self, dataset):
    """`(mean bits/dim, number of examples)` over one pass of a distributed `dataset`, in inference mode; the
    marginal bits/dim for a class-conditional trainer."""
    metrics = self.evaluate_metrics(dataset)
    return metrics["bits_per_dim"], metrics["num_examples"]

  def evaluate_metrics(self, dataset, num_importance_samples=1):
    """`{"bits_per_dim", "num_examples"}` over one pass of a distributed `dataset`, in inference mode, with the
    weights of `evaluation_weights` (`evaluation.Evaluator.evaluate`).

    `bits_per_dim` bounds `-log2 P(v) / D` for the discrete images `v = floor(x)` of the batches `x`: with
    `num_importance_samples=1` it is `-(log p(x') - log q(u | v)) / (D ln 2)` for the dequantizer's offsets `u`
    for the batch's own noise `x - v` and `x' = v + u` (with the uniform dequantizer: `flow.bits_per_dim(x)`);
    with `K > 1` the importance-weighted `-log2 (1/K) sum_k p(v + u_k) / q(u_k | v) / D` over that noise and
    `K - 1` rotations of it (`dequantization.rotated_noise` with `IMPORTANCE_SEED`: an image's draws do not
    depend on its batch or replica), and every figure below uses the same `K` draws.

    A class-conditional trainer's `dataset` yields `(images, labels)`; `bits_per_dim` is then the marginal
    `-log2(sum_y p(x | y) p(y)) / D`, and the dict adds `conditional_bits_per_dim` (`-log2 p(x | label) / D`),
    `accuracy`, the fraction whose label is the argmax of `p(y | x)` (`classifier.class_log_probs` with the
    same prior), and `class_log_loss`, the mean `-log p(label | x)` in nats. Every figure is a sum over
    examples (all replicas and workers) divided by their number.
    """
    with self.evaluation_weights():
      return self.evaluator.evaluate(dataset, num_importance_samples)

  def variables_are_finite(self):
    """Whether every variable of the flow (weights and running averages) and the dequantizer is finite on this
    worker."""
    # Local copies: reading a running average across replicas would be a collective per variable.
    return all(
      bool(tf.reduce_all(tf.math.is_finite(copy)))
      for variable in (*self.flow.variables, *self.dequantizer.variables)
      for copy in self.strategy.experimental_local_results(variable)
    )

  def sample_grid(self, temperature, num_samples):
    """A `reporting.image_grid` of `num_samples` samples at `temperature`, drawn with `SAMPLE_SEED`.

    A class-conditional trainer draws `ceil(num_samples / num_classes)` samples of each class instead, one row
    per class (class 0 on top).
    """
    columns = 8 if self.num_classes is None else -(-num_samples // self.num_classes)
    if num_samples not in self._sample_functions:
      self._sample_functions[num_samples] = tf.function(
        functools.partial(self._samples, num_samples if self.num_classes is None else columns),
        input_signature=[tf.TensorSpec([], tf.float32)],
      )
    with self.evaluation_weights():
      images = self._sample_functions[num_samples](tf.constant(temperature, tf.float32))
    return reporting.image_grid(images.numpy(), self.flow.num_bits, columns=columns)

  def _samples(self, num_samples, temperature):
    # In replica context every replica reads its own running averages; across replicas each read would be a
    # collective. Every replica draws the same samples (same seed); the first replica's are returned.
    # A class-conditional flow draws `num_samples` per class, class by class.
    seed = tf.constant(SAMPLE_SEED, tf.int32)
    context = {}
    if self.num_classes is not None:
      labels = tf.repeat(tf.range(self.num_classes), num_samples)
      context = {"conditional_input": tf.one_hot(labels, self.num_classes, dtype=self.flow.dtype)}
      num_samples *= self.num_classes
    samples = self.strategy.run(
      lambda: self.flow.sample(num_samples, seed=seed, temperature=temperature, **context),
    )
    return self.strategy.experimental_local_results(samples)[0]


def build_trainer(config, strategy=None, spec=None):
  """The `Trainer` of `config` under `strategy` (default: the current one) for the dataset `spec`.

  Its flow is `flow_builder.build_flow(config, spec)`, its optimizer the paper's Adam
  (`optimization.adam`) with `config`'s learning-rate schedule and clipping; `l2_coefficient`,
  `jit_compile`, `ema_decay`, `dequantization`, `batch_norm_batches` and `class_loss_weight` are `config`'s. With `config.condition == "label"` it is
  class-conditional, with the `label_counts` of `spec.train_split`.

  Raises:
    ConfigError: `config` cannot build a flow for its dataset.
  """
  strategy = strategy or tf.distribute.get_strategy()
  learning_rate = optimization.learning_rate_schedule(
    config.learning_rate, config.num_train_steps, config.warmup_steps, config.learning_rate_decay
  )
  return Trainer(
    strategy,
    functools.partial(flow_builder.build_flow, config, spec),
    global_batch_size=config.batch_size,
    make_optimizer=functools.partial(optimization.adam, learning_rate, config.clip_global_norm),
    l2_coefficient=config.l2_coefficient,
    label_counts=_train_label_counts(config, spec),
    jit_compile=config.jit_compile,
    ema_decay=config.ema_decay,
    dequantization=config.dequantization,
    label_dropout=config.effective_label_dropout,
    batch_norm_batches=config.batch_norm_batches,
    class_loss_weight=config.class_loss_weight,
  )


def _train_label_counts(config, spec):
  """The training split's label counts for `condition="label"`, else None."""
  if config.condition != "label":
    return None
  try:
    counts = evaluation.train_label_counts(config, spec)
  except (ValueError, FileNotFoundError) as error:
    raise ConfigError(str(error)) from error
  missing = [str(label) for label, count in enumerate(counts) if not count]
  if missing and len(missing) < len(counts):
    split = config.train_split or "the dataset's training split"
    print(
      f"warning: class(es) {', '.join(missing)} have no image in the training split {split!r}, "
      "so p(y) = 0 for them: they are never predicted, and a test image of theirs has an infinite "
      "class_log_loss (written as null in metrics.json).",
      file=sys.stderr,
      flush=True,
    )
  return counts


def _make_dequantizer(dequantization_name, flow):
  """The dequantizer `dequantization_name` names for `flow`'s images (a `ValueError` for an unknown name)."""
  if not getattr(flow, "is_image", False):
    raise ValueError(f"`dequantization` needs an image flow (`ImageRealNVP`); got {type(flow).__name__}.")
  return dequantization.make_dequantizer(dequantization_name, flow.event_shape, flow.num_bits, flow.dtype)


def train_and_evaluate(config, workdir, allow_config_change=()):
  """Trains `config`'s flow on its dataset, evaluates the test bits/dim and writes everything to `workdir`.

  Resumes from the newest intact checkpoint in `workdir` (a corrupt newer one is skipped with a `corrupt` log
  line); with `num_train_steps` already reached it only evaluates. Before anything is written, the run takes
  the workdir's lock (`workdirs.lock`, the chief only) and checks `config` against the workdir's `config.json`
  (`workdirs.check_config`: the model and data never change, the fields named in `allow_config_change` and the
  loop and output settings may) and its checkpoint (`checkpoints.restore`: exactly the flow's variables).
  `config.seed` seeds the input pipeline and, through `tf.random.set_seed` (process-wide), the initial weights
  and dropout, so the same config on the same machine and strategy trains the same model.

  Raises:
    ConfigError: a setting that cannot work (unknown dataset, strategy or preset, a batch size that does not
      divide across replicas, an image size the preset cannot take, data that is not prepared), a workdir that
      is a file, cannot be written or is in use, a config or checkpoint that does not match the workdir's run,
      or no intact checkpoint among several corrupt ones. The workdir is then left as it was.
    NonFiniteLossError: the loss stayed non-finite for `max_consecutive_non_finite` steps.
  """
  config.validate()
  strategy = strategy_for(config)
  spec = flow_builder.dataset_spec(config)
  if config.batch_size % strategy.num_replicas_in_sync:
    raise ConfigError(
      f"`batch_size` must be divisible by the {strategy.num_replicas_in_sync} replicas of "
      f"`strategy={config.strategy}`; got {config.batch_size}."
    )
  # Built first so that data that is not prepared fails before the model is built.
  eval_dataset = strategy.distribute_datasets_from_function(
    functools.partial(load_split, config, spec.eval_split, training=False, seed=config.seed)
  )
  tf.random.set_seed(config.seed)
  trainer = build_trainer(config, strategy, spec)
  is_chief = _is_chief(strategy)
  reporter = reporting.Reporter(config.num_train_steps)
  if is_chief and (hint := cpu_features.bfloat16_hint(config.compute_dtype)):
    print(f"hint: {hint}", file=sys.stderr, flush=True)  # stderr: stdout is the run's log lines
  workdirs.create(workdir)
  # Only the chief writes to the workdir, so only the chief locks it.
  with workdirs.lock(workdir) if is_chief else contextlib.nullcontext() as stale_holder:
    if stale_holder:
      reporter.log("lock", took_over=f"stale lock of process {stale_holder['pid']} (no longer running)")
    workdirs.check_layout(workdir)
    rewrite_config = workdirs.check_config(config, workdir, allow_config_change)
    checkpoint_dir = checkpoints.checkpoint_dir(workdir)
    start_step = _restore_newest_intact(trainer, checkpoint_dir, reporter, is_chief)
    # Nothing was written before: the config and the checkpoint are this run's.
    if is_chief and rewrite_config:
      _write_text(checkpoints.config_path(workdir), configs.to_json(config))
    # Every worker saves (saving may run collectives); only the chief's copy is kept.
    scratch_dir = None if is_chief else tempfile.mkdtemp(prefix="tfp_realnvp_worker_")
    manager = tf.train.CheckpointManager(
      trainer.checkpoint,
      scratch_dir or checkpoint_dir,
      max_to_keep=config.max_checkpoints_to_keep,
      step_counter=trainer.step,
    )
    try:
      run = _Run(
        trainer=trainer,
        config=config,
        spec=spec,
        eval_dataset=eval_dataset,
        writers=_summary_writers(workdir, is_chief),
        reporter=reporter,
        workdir=workdir,
        is_chief=is_chief,
        clock=wall_time.Clock(wall_time.seconds_at(workdir, start_step)),
      )
      if is_chief:
        wall_time.truncate_validation(workdir, start_step)
      with run.writers.train.as_default():
        reporting.summary_text("config", _indented(configs.to_json(config)), start_step)
      _train(run, manager=manager, start_step=start_step)
      metrics = _evaluate_and_report(run)
    finally:
      if scratch_dir:
        shutil.rmtree(scratch_dir, ignore_errors=True)
  if trainer.weight_average is not None:  # the checkpoints keep the training weights
    trainer.weight_average.assign_to_weights()
  statistics = trainer.batch_norm_statistics
  if statistics is not None and statistics.is_for(metrics["step"]):
    statistics.assign_to_running_averages()
  return TrainResult(flow=trainer.flow, step=metrics["step"], metrics=metrics)


def _restore_newest_intact(trainer, checkpoint_dir, reporter, is_chief=True):
  """Restores the newest intact checkpoint of `checkpoint_dir` into `trainer`; returns its step (0: none).

  Every `ckpt-N` counts, listed in the state file `checkpoint` or not: a missing or garbled state file is
  rewritten (chief) to list them, with a `state` log line, so the run resumes instead of starting again and
  its checkpoint manager keeps managing them."""
  state_error = checkpoints.state_error(checkpoint_dir)
  latest, skipped = checkpoints.newest_intact(checkpoint_dir)
  for path, error in skipped:
    reporter.log("corrupt", checkpoint=path, error=error, using=latest or "none")
  if latest is None:
    if skipped:
      raise ConfigError(
        f"No checkpoint in {checkpoint_dir} is intact ({skipped[0][1]}); to train from scratch in this "
        f"workdir, move them aside: mv {checkpoint_dir} {checkpoint_dir}.corrupt"
      )
    return 0
  start_step = trainer.restore(latest)
  if state_error is not None and is_chief:
    found = checkpoints.numbered_checkpoints(checkpoint_dir)
    kept = found[: found.index(latest) + 1] if latest in found else [latest]
    try:
      # With their times, as `tf.train.CheckpointManager` writes them: it manages (keeps or deletes) only
      # checkpoints newer than `last_preserved_timestamp`.
      times = [tf.io.gfile.stat(f"{path}.index").mtime_nsec / 1e9 for path in kept]
      tf.compat.v1.train.update_checkpoint_state(
        checkpoint_dir,
        latest,
        all_model_checkpoint_paths=kept,
        all_model_checkpoint_timestamps=times,
        last_preserved_timestamp=min(times) - 1.0,
      )
    except (OSError, tf.errors.OpError) as error:
      raise ConfigError(f"{checkpoint_dir}/checkpoint cannot be written: {_first_line(error)}") from error
    reporter.log("state", problem=state_error, rewritten=f"{len(kept)} checkpoint(s), latest {latest}")
  if start_step:
    reporter.log("resume", step=start_step, checkpoint=latest)
  return start_step


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Run:
  """What the training loop and the final evaluation of one `train_and_evaluate` call share."""

  trainer: Trainer
  config: configs.TrainConfig
  spec: data.DatasetSpec
  eval_dataset: object  # a distributed dataset of the eval split
  writers: "_SummaryWriters"
  reporter: reporting.Reporter
  workdir: str
  is_chief: bool  # only the chief writes files
  clock: wall_time.Clock  # the training seconds of every run of the workdir

  def estimate_batch_norm_statistics(self):
    """`Trainer.estimate_batch_norm_statistics` on the same training batches every time (a fixed seed), so
    the statistics of a step do not depend on when they were estimated; a `warning` line if not finite."""
    make_batches = statistics_batches(self.trainer, self.config, self.spec.train_split)
    if self.trainer.estimate_batch_norm_statistics(make_batches) is False:
      self.reporter.log(
        "warning",
        step=int(self.trainer.step.numpy()),
        batch_norm_statistics="not finite; evaluating with the training's running averages",
      )


def _evaluate_and_report(run):
  """The test bits/dim over the whole eval split and the sample grids: logged, summarized and (chief) saved."""
  trainer, config = run.trainer, run.config
  run.estimate_batch_norm_statistics()
  figures = trainer.evaluate_metrics(run.eval_dataset)
  test_bits_per_dim, num_examples = figures.pop("bits_per_dim"), figures.pop("num_examples")
  step = int(trainer.step.numpy())
  # Named `test` whatever the split (so are the `test_*` keys of metrics.json); the line says which split it is.
  run.reporter.log(
    "test",
    step=step,
    split=run.spec.eval_split,
    bits_per_dim=test_bits_per_dim,
    examples=num_examples,
    **figures,
  )
  train_seconds = run.clock.seconds()
  _record_validation(
    run,
    step=step,
    bits_per_dim=test_bits_per_dim,
    examples=num_examples,
    final=True,
    seconds=train_seconds,
    figures=figures,
  )
  metrics = {
    "dataset": config.dataset,
    "split": run.spec.eval_split,
    "step": step,
    "train_seconds": round(train_seconds, 3),
    "test_bits_per_dim": test_bits_per_dim,
    "num_test_examples": num_examples,
    # A class-conditional run: `test_conditional_bits_per_dim`, `test_accuracy` and `test_class_log_loss`.
    **{f"test_{name}": value for name, value in figures.items()},
    **_importance_weighted_metrics(run, step=step),
  }
  grids = {
    temperature: trainer.sample_grid(temperature, config.num_samples)
    for temperature in config.sample_temperatures
  }
  with run.writers.eval.as_default():
    for temperature, grid in grids.items():
      reporting.summary_image(_samples_tag(temperature, step), grid, step)
  run.writers.eval.flush()
  if run.is_chief:
    _write_metrics_and_samples(run, metrics=metrics, grids=grids)
  return metrics


def _write_metrics_and_samples(run, *, metrics, grids):
  """`metrics.json` and `samples.png` (the sample grids by temperature) in the workdir."""
  metrics_path, samples_path = (
    os.path.join(run.workdir, "metrics.json"),
    os.path.join(run.workdir, "samples.png"),
  )
  non_finite = sorted(
    name for name, value in metrics.items() if isinstance(value, float) and not np.isfinite(value)
  )
  if non_finite:
    run.reporter.log("warning", non_finite=",".join(non_finite), written_as="null in metrics.json")
  _write_text(metrics_path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
  titled = {f"temperature {t}": grid for t, grid in grids.items()}
  workdirs.write_atomically(
    samples_path,
    reporting.sample_grids_png(
      titled, step=metrics["step"], bits_per_dim=metrics["test_bits_per_dim"], split=metrics["split"]
    ),
  )
  run.reporter.log("wrote", metrics=metrics_path, samples=samples_path)


def _importance_weighted_metrics(run, *, step):
  """`dequantization`, `num_importance_samples` and, for `K = config.num_importance_samples > 1`, the test
  figures at `K` draws (`test_bits_per_dim_k{K}`, ...; see `Trainer.evaluate_metrics`): logged and summarized."""
  num_samples = run.config.num_importance_samples
  metrics = {"dequantization": run.config.dequantization, "num_importance_samples": num_samples}
  if num_samples == 1:
    return metrics
  figures = run.trainer.evaluate_metrics(run.eval_dataset, num_samples)
  figures.pop("num_examples")
  run.reporter.log("test", step=step, split=run.spec.eval_split, draws=num_samples, **figures)
  with run.writers.eval.as_default():
    for name, value in figures.items():
      reporting.summary_scalar(f"{name}_k{num_samples}", value, step)
  return {**metrics, **{f"test_{name}_k{num_samples}": value for name, value in figures.items()}}


class _Interval:
  """The training steps since the last `train` log line: their time and the bits/dim of the applied ones."""

  def __init__(self):
    self.bits_per_dim, self.seconds, self.steps = [], 0.0, 0

  def add(self, seconds, bits_per_dim=None):
    self.seconds += seconds
    self.steps += 1
    if bits_per_dim is not None:
      self.bits_per_dim.append(bits_per_dim)

  def log(self, run, step):
    """The `train` log line and summaries of this interval."""
    steps_per_sec = self.steps / self.seconds
    train_bits_per_dim = float(np.mean(self.bits_per_dim)) if self.bits_per_dim else float("nan")
    run.reporter.log("train", step=step, steps_per_sec=steps_per_sec, bits_per_dim=train_bits_per_dim)
    with run.writers.train.as_default():
      reporting.summary_scalar("bits_per_dim", train_bits_per_dim, step)
      reporting.summary_scalar("steps_per_sec", steps_per_sec, step)
      reporting.summary_scalar("learning_rate", _current_learning_rate(run.trainer.optimizer), step)


def _train(run, *, manager, start_step):
  """The training loop from `start_step` to `config.num_train_steps`, or to the first step past
  `config.max_train_minutes` of training: logs, evaluates and checkpoints."""
  trainer, config = run.trainer, run.config
  if start_step >= config.num_train_steps:
    return
  if _over_budget(run):
    run.reporter.log(
      "budget", step=start_step, train_seconds=run.clock.seconds(), max_train_minutes=config.max_train_minutes
    )
    return
  # A resumed run reseeds its input, so it does not replay the batches it has already seen.
  train_dataset = trainer.strategy.distribute_datasets_from_function(
    functools.partial(
      load_split, config, run.spec.train_split, training=True, seed=config.seed + 1_000_003 * start_step
    )
  )
  batches = iter(train_dataset)
  # Speed counts the training steps only: evaluation and checkpointing are left out.
  interval, consecutive_skips, last_saved, checkpoint_due = _Interval(), 0, start_step, False
  run.clock.start()
  for step in range(start_step + 1, config.num_train_steps + 1):
    step_start = time.perf_counter()
    bits_per_dim, applied = trainer.train_step(next(batches))
    applied = bool(applied)  # waits for the step to finish
    interval.add(time.perf_counter() - step_start, float(bits_per_dim) if applied else None)
    consecutive_skips = 0 if applied else consecutive_skips + 1
    if not applied:
      _report_skip(
        run, step=step, consecutive_skips=consecutive_skips, last_saved=last_saved, manager=manager
      )
    run.reporter.progress(step, bits_per_dim=float(bits_per_dim))
    over_budget = _over_budget(run)
    last_step = step == config.num_train_steps or over_budget
    if step % config.log_every_steps == 0 or last_step:
      interval.log(run, step)
      interval = _Interval()
    if config.eval_every_steps and step % config.eval_every_steps == 0 and not last_step:
      _evaluate_during_training(run, step=step)
    if step % config.checkpoint_every_steps == 0 or last_step:
      checkpoint_due = True
    # Weights whose loss or gradient was just not finite (such as after a diverging update) would be resumed
    # from: the checkpoint waits for a step that applies. (Loss scaling skips steps by design.)
    if checkpoint_due and not (consecutive_skips and trainer.loss_scale is None and not last_step):
      _save_finite(run, manager=manager, step=step, last_saved=last_saved)
      last_saved, checkpoint_due = step, False
    if over_budget:
      run.reporter.log(
        "budget", step=step, train_seconds=run.clock.seconds(), max_train_minutes=config.max_train_minutes
      )
      break
  # The clock stops with the loop; the last checkpoint's record gets the figure the final metrics report, so a
  # rerun that only evaluates reports the same.
  run.clock.stop()
  if run.is_chief:
    wall_time.record(run.workdir, step, run.clock.seconds())
  run.writers.train.flush()
  run.writers.eval.flush()


def _report_skip(run, *, step, consecutive_skips, last_saved, manager):
  """Logs a skipped step; raises `NonFiniteLossError` after `max_consecutive_non_finite` in a row."""
  loss_scale = run.trainer.loss_scale
  details = {} if loss_scale is None else {"loss_scale": float(loss_scale.scale.numpy())}
  run.reporter.log("skip", step=step, reason="non-finite loss or gradient; update not applied", **details)
  if consecutive_skips >= run.config.max_consecutive_non_finite:
    raise NonFiniteLossError(
      f"Training stopped at step {step}: the loss or gradient was not finite for {consecutive_skips} "
      f"consecutive steps. {_advice(last_saved, manager)}"
    )


def _evaluate_during_training(run, *, step):
  """The `eval` log line, summaries and sample grid at temperature 1 of a periodic evaluation, and its line of
  `validation.jsonl`, with the training seconds so far: bits/dim, and for a class-conditional run also the
  conditional bits/dim, accuracy and class log loss that the same pass computes."""
  train_seconds = run.clock.seconds()  # what reaching these weights took, not evaluating them
  run.estimate_batch_norm_statistics()
  figures = run.trainer.evaluate_metrics(run.eval_dataset)
  eval_bits_per_dim, num_examples = figures.pop("bits_per_dim"), figures.pop("num_examples")
  run.reporter.log(
    "eval",
    step=step,
    bits_per_dim=eval_bits_per_dim,
    examples=num_examples,
    **figures,
    train_seconds=train_seconds,
  )
  _record_validation(
    run,
    step=step,
    bits_per_dim=eval_bits_per_dim,
    examples=num_examples,
    final=False,
    seconds=train_seconds,
    figures=figures,
  )
  with run.writers.eval.as_default():
    grid = run.trainer.sample_grid(1.0, run.config.num_samples)
    reporting.summary_image(_samples_tag(1.0, step), grid, step)


def _record_validation(run, *, step, bits_per_dim, examples, final, seconds, figures):
  """The eval split's bits/dim (and a class-conditional run's other `figures`) at `step` against the training
  `seconds`: the eval run's scalars of each, with `train_seconds` (TensorBoard: its step axis against
  bits/dim's), and a `validation.jsonl` line (chief)."""
  with run.writers.eval.as_default():
    for name, value in {"bits_per_dim": bits_per_dim, **figures, "train_seconds": seconds}.items():
      reporting.summary_scalar(name, value, step)
  if run.is_chief:
    line = dict(step=step, train_seconds=round(seconds, 3), bits_per_dim=bits_per_dim, examples=examples)
    wall_time.append_validation(run.workdir, _json_safe({**line, **figures, "final": final}))


def _over_budget(run):
  """Whether the training seconds have reached `max_train_minutes` (decided alike on every worker)."""
  budget = run.config.max_train_minutes
  if budget is None:
    return False
  over = run.clock.seconds() >= 60.0 * budget
  strategy = run.trainer.strategy
  if _is_multi_worker(strategy):
    # Workers' clocks differ: they stop together when any of them is over.
    flag = strategy.run(lambda: tf.constant(1 if over else 0, tf.int32))
    over = bool(strategy.reduce(tf.distribute.ReduceOp.MAX, flag, axis=None))
  return over


def _save_finite(run, *, manager, step, last_saved):
  """Saves a checkpoint of `step`, unless a weight is not finite: then `NonFiniteLossError`, nothing written.
  The checkpoint holds the batch-norm statistics re-estimated for its step (`batch_norm_batches`)."""
  if not run.trainer.variables_are_finite():
    raise NonFiniteLossError(
      f"Training stopped at step {step}: the weights are not finite, so no checkpoint "
      f"was written. {_advice(last_saved, manager)}"
    )
  run.estimate_batch_norm_statistics()
  _save_checkpoint(manager, step, last_saved)
  if run.is_chief:
    wall_time.record(run.workdir, step, run.clock.seconds())


def _advice(last_saved, manager):
  """What to do after training stopped on non-finite values: resume from the last checkpoint, written only
  after an applied step, with a lower learning rate (or start again when there is none)."""
  if not manager.latest_checkpoint:
    return (
      "No checkpoint was written; rerun with a lower --learning_rate and "
      "--allow_config_change=learning_rate (it starts from step 0)."
    )
  return (
    f"The last checkpoint (step {last_saved}, {manager.latest_checkpoint}) was written after an applied step; "
    "rerun with a lower --learning_rate and --allow_config_change=learning_rate to resume from it."
  )


def _save_checkpoint(manager, step, last_saved):
  """`manager.save(checkpoint_number=step)`; a disk error (a full disk, no permission) is a `ConfigError`,
  one line, with what the save left behind removed (TensorFlow's `ckpt-N_temp/` and partial `ckpt-N.*`)."""
  try:
    manager.save(checkpoint_number=step)
  except (OSError, tf.errors.OpError) as error:
    prefix = os.path.join(manager.directory, f"ckpt-{step}")
    for leftover in tf.io.gfile.glob(f"{prefix}_temp*") + tf.io.gfile.glob(f"{prefix}.*"):
      with contextlib.suppress(OSError, tf.errors.OpError):
        if tf.io.gfile.isdir(leftover):
          tf.io.gfile.rmtree(leftover)
        else:
          tf.io.gfile.remove(leftover)
    raise ConfigError(
      f"The checkpoint of step {step} cannot be written in {manager.directory}: {_first_line(error)}; "
      f"nothing of it was left. The last checkpoint (step {last_saved}) is intact: free the space and rerun "
      "to resume from it."
    ) from error


class _SummaryWriters(typing.NamedTuple):
  train: object
  eval: object


def _summary_writers(workdir, is_chief):
  """`tensorboard/train` and `tensorboard/eval`: one TensorBoard run per phase, with the same tags (such as
  `bits_per_dim`), so TensorBoard draws the two curves on one chart. Other workers write nothing."""
  if not is_chief:
    return _SummaryWriters(train=tf.summary.create_noop_writer(), eval=tf.summary.create_noop_writer())
  tensorboard_dir = os.path.join(workdir, "tensorboard")
  return _SummaryWriters(
    train=tf.summary.create_file_writer(os.path.join(tensorboard_dir, "train")),
    eval=tf.summary.create_file_writer(os.path.join(tensorboard_dir, "eval")),
  )


def _samples_tag(temperature, step):
  # The step in the tag: TensorBoard shows one card per tag, and a card shows the image of one step at a time.
  return f"samples/temperature_{temperature}/step_{step}"


def _indented(text):
  # TensorBoard renders text summaries as Markdown; lines indented by four spaces show verbatim.
  return "\n".join("    " + line for line in text.splitlines())


def _current_learning_rate(optimizer):
  # tf_keras keeps the scheduled rate of the last update in a (possibly mirrored) variable.
  return float(tf.convert_to_tensor(optimizer.learning_rate))


def statistics_batches(trainer, config, train_split):
  """The `make_batches` of `Trainer.estimate_batch_norm_statistics`: the same training batches of `train_split`
  every time (a fixed seed), so the statistics of a step do not depend on when they were estimated."""
  return lambda: iter(
    trainer.strategy.distribute_datasets_from_function(
      functools.partial(load_split, config, train_split, training=True, seed=config.seed + 7_919)
    )
  )


def strategy_for(config):
  """The `tf.distribute` strategy `config` names, its logical CPU devices configured; a bad setting is a
  `ConfigError`."""
  try:
    strategies.configure_cpu_devices(config.num_cpu_devices)
    return strategies.get_strategy(config.strategy, config.tpu_address)
  except ValueError as error:
    raise ConfigError(str(error)) from error


def load_split(config, split, input_context, *, training, seed):
  """`data.load` of `split` with `config`'s data settings (labels for a class-conditional run), per input
  pipeline; data that cannot be read is a `ConfigError`."""
  try:
    return data.load(
      config.dataset,
      split,
      batch_size=config.batch_size,
      training=training,
      data_dir=config.data_dir,
      image_size=config.image_size,
      seed=seed,
      input_context=input_context,
      with_labels=config.condition == "label",
    )
  except (ValueError, FileNotFoundError) as error:
    raise ConfigError(str(error)) from error


def _computes_in_float16(flow):
  return flow.compute_dtype is not None and tf.as_dtype(flow.compute_dtype) == tf.float16


def _is_multi_worker(strategy):
  """Whether `strategy` runs on a cluster of workers (its cluster resolver names this one's task)."""
  resolver = strategy.cluster_resolver
  return resolver is not None and bool(resolver.task_type)


def _is_chief(strategy):
  if not _is_multi_worker(strategy):
    return True
  resolver = strategy.cluster_resolver
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "chief" or (
    resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
  )


def _write_text(path, text):
  workdirs.write_atomically(path, text)


def _first_line(error):
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _json_safe(value):
  """`value` with every non-finite float replaced by None: `json.dumps` would write `Infinity` or `NaN`, which
  is not JSON."""
  if isinstance(value, dict):
    return {key: _json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(item) for item in value]
  if isinstance(value, float) and not np.isfinite(value):
    return None
  return value

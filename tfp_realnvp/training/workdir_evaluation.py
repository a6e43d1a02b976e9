"""A finished (or running) training workdir evaluated on any split, once: the test figures of a run validated on
another split, K = 1 over every image and importance-weighted K over all of them or the first `max_images`.

```python
from tfp_realnvp.training import workdir_evaluation
report = workdir_evaluation.evaluate_workdir("runs/fashion", split="test", num_importance_samples=100,
                                             max_importance_images=2000)
```

`python train.py --workdir=runs/fashion --evaluate_only --eval_split=test --num_importance_samples=100
--max_importance_images=2000` prints the same report as JSON. Nothing in the workdir is written or locked.
"""

import dataclasses
import math
import time

import tensorflow as tf

from tfp_realnvp.training import checkpoints, configs, flow_builder, train_lib

__all__ = ["bound_name", "evaluate_workdir"]


def bound_name(dequantization, num_importance_samples):
  """What the figure at `K = num_importance_samples` bounds, and how, in words."""
  if num_importance_samples == 1:
    how = "-(log p(v + u) - log q(u | v)) / (D ln 2), one draw u ~ q (K = 1, the variational bound)"
  else:
    how = (
      f"-log2((1/K) sum_k p(v + u_k) / q(u_k | v)) / D over K = {num_importance_samples} draws "
      "(the importance-weighted bound)"
    )
  return f"upper bound on -log2 P(v) / D of the discrete images v: {how}, q the {dequantization} dequantizer"


def evaluate_workdir(
  workdir,
  split,
  num_importance_samples=1,
  max_importance_images=None,
  checkpoint=None,
  data_dir=None,
  batch_norm_batches=None,
):
  """The figures of the run in `workdir` (its latest checkpoint, or `checkpoint`) on `split`.

  Returns a dict: `workdir`, `checkpoint`, `step`, `dataset`, `split`, `dequantization`, `batch_norm` (whose
  batch-norm statistics: re-estimated for the evaluated weights, or the training's running averages), and
  `figures`, a list with the K = 1 figures over every image of `split` and, for `num_importance_samples > 1`,
  the importance-weighted ones over every image or the first `max_importance_images`; each with
  `num_importance_samples`, `num_examples`, `bits_per_dim`, `bound` (`bound_name`), `seconds`,
  `images_per_sec` and, for a class-conditional run, `conditional_bits_per_dim`, `accuracy` and
  `class_log_loss`. The weights are those the run evaluated with (`Trainer.evaluation_weights`: the EMA,
  and the batch-norm statistics the checkpoint holds for its step). `data_dir` (default: the run's) is where
  a tfds dataset is read from. `batch_norm_batches` (default: the run's) re-estimates the batch-norm statistics
  from that many training batches when the checkpoint holds none for its step (a run made with
  `batch_norm_batches=0`, or before the setting existed), as training would have before evaluating.

  Raises:
    FileNotFoundError: no config.json or no checkpoint.
    ConfigError: a bad split, K or cap, data that cannot be read, or a checkpoint of another model.
  """
  path = checkpoints.config_path(workdir)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"`workdir` must be a training run's directory with a config.json; {path} does not exist."
    )
  with tf.io.gfile.GFile(path) as file:
    config = configs.from_json(file.read(), source=path)
  config = _with_evaluation(config, split, num_importance_samples, max_importance_images)
  if data_dir is not None:
    config = dataclasses.replace(config, data_dir=data_dir)
  if batch_norm_batches is not None:
    config = dataclasses.replace(config, batch_norm_batches=batch_norm_batches)
    config.validate()
  if checkpoint is None:
    checkpoint, _ = checkpoints.newest_intact(checkpoints.checkpoint_dir(workdir))
    if checkpoint is None:
      raise FileNotFoundError(f"`workdir` {workdir} has no intact checkpoint under checkpoints/.")
  strategy = train_lib.strategy_for(config)
  spec = flow_builder.dataset_spec(config)
  trainer = train_lib.build_trainer(config, strategy, spec)
  step = trainer.restore(checkpoint)
  statistics = trainer.batch_norm_statistics
  batch_norm = "training running averages"
  if statistics is not None and statistics.is_for(step):
    batch_norm = "re-estimated for the evaluated weights (from the checkpoint)"
  elif statistics is not None:
    make_batches = train_lib.statistics_batches(trainer, config, spec.train_split)
    if trainer.estimate_batch_norm_statistics(make_batches):
      batch_norm = (
        f"re-estimated for the evaluated weights (now, from {config.batch_norm_batches} training batches)"
      )
  figures = [_figures(trainer, config, spec, 1, None)]
  if num_importance_samples > 1:
    figures.append(_figures(trainer, config, spec, num_importance_samples, max_importance_images))
  return dict(
    workdir=str(workdir),
    checkpoint=checkpoint,
    step=step,
    dataset=config.dataset,
    split=spec.eval_split,
    dequantization=config.dequantization,
    batch_norm=batch_norm,
    figures=figures,
  )


def _with_evaluation(config, split, num_importance_samples, max_importance_images):
  if not (isinstance(split, str) and split):
    raise configs.ConfigError(f"`split` must be a split name such as test; got {split!r}.")
  if (
    isinstance(num_importance_samples, bool)
    or not isinstance(num_importance_samples, int)
    or num_importance_samples < 1
  ):
    raise configs.ConfigError(
      f"`num_importance_samples` must be an integer >= 1; got {num_importance_samples!r}."
    )
  if max_importance_images is not None and (
    isinstance(max_importance_images, bool)
    or not isinstance(max_importance_images, int)
    or max_importance_images < 1
  ):
    raise configs.ConfigError(
      f"`max_importance_images` must be None or an integer >= 1; got {max_importance_images!r}."
    )
  return dataclasses.replace(config, eval_split=split, num_importance_samples=num_importance_samples)


def _figures(trainer, config, spec, num_samples, max_images):
  """One evaluation pass at `num_samples` draws over the split, or its first `max_images` images."""

  def dataset_fn(input_context):
    dataset = train_lib.load_split(config, spec.eval_split, input_context, training=False, seed=config.seed)
    if max_images is None:
      return dataset
    # The first images of the split (each its own noise, as in the full pass), in batches as before.
    per_pipeline = math.ceil(max_images / input_context.num_input_pipelines)
    batch = input_context.get_per_replica_batch_size(config.batch_size)
    return dataset.unbatch().take(per_pipeline).batch(batch)

  dataset = trainer.strategy.distribute_datasets_from_function(dataset_fn)
  start = time.perf_counter()
  metrics = trainer.evaluate_metrics(dataset, num_samples)
  seconds = time.perf_counter() - start
  count = metrics.pop("num_examples")
  return dict(
    num_importance_samples=num_samples,
    num_examples=count,
    all_images=max_images is None or count < max_images,
    bound=bound_name(config.dequantization, num_samples),
    seconds=round(seconds, 1),
    images_per_sec=round(count / seconds, 2),
    **metrics,
  )

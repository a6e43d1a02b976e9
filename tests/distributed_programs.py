"""Programs the distributed tests run in fresh processes (logical devices and collectives must be configured
before TensorFlow's first op, which a pytest process has long run).

  python tests/distributed_programs.py mirrored OUT.json
  python tests/distributed_programs.py conditional_mirrored OUT.json
  python tests/distributed_programs.py ema_mirrored OUT.json
  python tests/distributed_programs.py variational_mirrored OUT.json
  python tests/distributed_programs.py batch_norm_statistics_mirrored OUT.json
  python tests/distributed_programs.py worker INDEX PORT0 PORT1 WORKDIR OUT.npz
  python tests/distributed_programs.py train WORKDIR NUM_TRAIN_STEPS
"""

import json
import os
import signal
import sys

from tests.training_testing import TINY_MODEL, tiny_config  # no TensorFlow yet

# The worker must outlive no test: a peer that never starts would otherwise block it forever (TF ignores SIGTERM).
signal.alarm(int(os.environ.get("TEST_PROGRAM_TIMEOUT_S", "240")))


def _train_on(trainer, global_batches, initial=None):
  """`{initial, losses, final}`: `trainer`'s weights before (set to `initial` when given), its loss on each
  global batch of `global_batches` (distributed by the trainer's strategy) and its weights after."""
  if initial is not None:
    for variable, value in zip(trainer.flow.variables, initial):
      variable.assign(value)
  initial = [variable.numpy() for variable in trainer.flow.variables]
  batches = trainer.strategy.experimental_distribute_dataset(global_batches)
  losses = [float(trainer.train_step(batch)[0]) for batch in batches]
  return dict(initial=initial, losses=losses, final=[variable.numpy() for variable in trainer.flow.variables])


def _uniform_batches(num_batches):
  """`num_batches` global batches of 16 uniform 8x8x1 images in `[0, 16)`, the same in every run."""
  import numpy as np
  import tensorflow as tf

  images = np.random.default_rng(0).uniform(0, 16, size=[num_batches * 16, 8, 8, 1]).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices(images).batch(16)


def _sgd_trainer(strategy, make_flow=None, learning_rate=0.05, **trainer_kwargs):
  """A `train_lib.Trainer` under `strategy` of `make_flow()` (default: the tiny digits flow), with global
  batches of 16 and SGD at `learning_rate` (gradients clipped at norm 100)."""
  import tf_keras as tfk

  from tfp_realnvp.flows import RealNVP
  from tfp_realnvp.training import train_lib

  return train_lib.Trainer(
    strategy,
    make_flow or (lambda: RealNVP.from_preset("digits", **TINY_MODEL)),
    global_batch_size=16,
    make_optimizer=lambda: tfk.optimizers.SGD(learning_rate, global_clipnorm=100.0),
    **trainer_kwargs,
  )


def mirrored(out_path):
  """Trains the same tiny flow on the same global batches on 1 device and on 2 mirrored logical CPUs, with SGD:
  linear in the gradient, so a loss not averaged over the global batch, or batch moments not pooled across
  replicas, would show. (Adam turns round-off in near-zero gradients into steps of up to its learning rate,
  which hides nothing but proves less.) Then `FlowModel.fit`
  with the paper's Adam on the 2 replicas.
  """
  from tfp_realnvp.training import strategies

  strategies.configure_cpu_devices(2)
  import numpy as np

  from tfp_realnvp import data, keras_model
  from tfp_realnvp.flows import RealNVP

  def make_flow():
    return RealNVP.from_preset("digits", **TINY_MODEL)

  # One strategy object per kind for the whole process: a second MirroredStrategy over the same devices
  # restarts the collective instance keys, which the runtime has already bound to other tensor shapes.
  strategy_by_name = {name: strategies.get_strategy(name) for name in ("default", "mirrored")}
  global_batches = _uniform_batches(8)
  runs = {}
  for strategy_name, strategy in strategy_by_name.items():
    trainer = _sgd_trainer(strategy, make_flow)
    runs[strategy_name] = dict(
      _train_on(trainer, global_batches, runs["default"]["initial"] if runs else None),
      replicas=strategy.num_replicas_in_sync,
      trainable=[variable.trainable for variable in trainer.flow.variables],
    )
  one, two = runs["default"], runs["mirrored"]

  def largest_difference(trainable):
    return max(
      float(np.max(np.abs(a - b)))
      for a, b, t in zip(one["final"], two["final"], one["trainable"])
      if t == trainable
    )

  report = dict(
    replicas=[one["replicas"], two["replicas"]],
    loss_difference=float(np.max(np.abs(np.subtract(one["losses"], two["losses"])))),
    weight_difference=largest_difference(True),
    running_average_difference=largest_difference(False),
    weight_change=max(float(np.max(np.abs(a - b))) for a, b in zip(one["final"], one["initial"])),
  )
  # The Keras path under the same strategy: `fit` on 2 replicas lowers the loss on digits.
  with strategy_by_name["mirrored"].scope():
    model = keras_model.FlowModel(make_flow())
    model.compile()
  history = model.fit(
    data.load("digits", "train", batch_size=32, training=True), steps_per_epoch=10, epochs=3, verbose=0
  )
  report["keras_mirrored_loss"] = history.history["loss"]
  with open(out_path, "w") as file:
    json.dump(report, file)


def conditional_mirrored(out_path):
  """A class-conditional tiny flow trained with SGD on the same global batches of `(images, labels)` on 1 device
  and on 2 mirrored logical CPUs, then evaluated (marginal and conditional bits/dim, accuracy) on 45 digits
  test images, which do not split evenly across the replicas."""
  from tfp_realnvp.training import strategies

  strategies.configure_cpu_devices(2)
  import numpy as np
  import tensorflow as tf

  from tfp_realnvp import data
  from tfp_realnvp.flows import RealNVP

  def make_flow():
    return RealNVP.from_preset("digits", **TINY_MODEL, conditional_event_shape=(10,))

  rng = np.random.default_rng(0)
  images = rng.uniform(0, 16, size=[3 * 16, 8, 8, 1]).astype(np.float32)
  labels = rng.integers(0, 10, size=[3 * 16]).astype(np.int32)
  global_batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
  label_counts = data.label_counts("digits", "train")
  runs = {}
  for strategy_name in ("default", "mirrored"):
    strategy = strategies.get_strategy(strategy_name)
    trainer = _sgd_trainer(strategy, make_flow, label_counts=label_counts)
    trained = _train_on(trainer, global_batches, runs["default"]["initial"] if runs else None)
    test = strategy.distribute_datasets_from_function(
      lambda context: data.load(
        "digits", "test[:45]", batch_size=16, training=False, input_context=context, with_labels=True
      )
    )
    runs[strategy_name] = dict(
      trained,
      replicas=strategy.num_replicas_in_sync,
      metrics=trainer.evaluate_metrics(test),
    )
  one, two = runs["default"], runs["mirrored"]
  report = dict(
    replicas=[one["replicas"], two["replicas"]],
    loss_difference=float(np.max(np.abs(np.subtract(one["losses"], two["losses"])))),
    weight_difference=max(float(np.max(np.abs(a - b))) for a, b in zip(one["final"], two["final"])),
    weight_change=max(float(np.max(np.abs(a - b))) for a, b in zip(one["final"], one["initial"])),
    metrics=[one["metrics"], two["metrics"]],
  )
  with open(out_path, "w") as file:
    json.dump(report, file)


def ema_mirrored(out_path):
  """A tiny flow trained with SGD and an EMA of its weights on the same global batches, from the same weights and
  averages, on 1 device and on 2 mirrored logical CPUs: the averages of each replica, of each strategy, and the
  bits/dim evaluated with them (on 45 digits test images, split unevenly across the replicas)."""
  from tfp_realnvp.training import strategies

  strategies.configure_cpu_devices(2)
  import numpy as np

  from tfp_realnvp import data

  global_batches = _uniform_batches(6)
  runs, initial = {}, None
  for strategy_name in ("default", "mirrored"):
    strategy = strategies.get_strategy(strategy_name)
    trainer = _sgd_trainer(strategy, ema_decay=0.9)
    average = trainer.weight_average
    initial = initial or [variable.numpy() for variable in trainer.flow.variables]
    for variable, value in zip(trainer.flow.variables, initial):
      variable.assign(value)
    for average_variable, weight in zip(average.averages, average.weights):
      average_variable.assign(weight)
    start = [variable.numpy() for variable in average.averages]
    _train_on(trainer, global_batches)
    copies = [[copy.numpy() for copy in strategy.experimental_local_results(a)] for a in average.averages]
    test = strategy.distribute_datasets_from_function(
      lambda context: data.load("digits", "test[:45]", batch_size=16, training=False, input_context=context)
    )
    runs[strategy_name] = dict(
      start=start,
      copies=copies,
      num_updates=int(average.num_updates.numpy()),
      bits_per_dim=trainer.evaluate_metrics(test)["bits_per_dim"],
    )
  one, two = runs["default"], runs["mirrored"]
  report = dict(
    replica_copies=[len(one["copies"][0]), len(two["copies"][0])],
    replica_difference=max(float(np.max(np.abs(c[0] - c[-1]))) for c in two["copies"]),
    strategy_difference=max(float(np.max(np.abs(a[0] - b[0]))) for a, b in zip(one["copies"], two["copies"])),
    average_change=max(float(np.max(np.abs(c[0] - s))) for c, s in zip(one["copies"], one["start"])),
    num_updates=[one["num_updates"], two["num_updates"]],
    bits_per_dim=[one["bits_per_dim"], two["bits_per_dim"]],
  )
  with open(out_path, "w") as file:
    json.dump(report, file)


def variational_mirrored(out_path):
  """A tiny class-conditional flow and its variational dequantizer trained jointly with SGD on the same global
  batches on 1 device and on 2 mirrored logical CPUs, then evaluated at 1 and at 3
  importance-weighted draws on 45 digits test images (which do not split evenly across the replicas)."""
  from tfp_realnvp.training import strategies

  strategies.configure_cpu_devices(2)
  import numpy as np
  import tensorflow as tf

  from tfp_realnvp import data
  from tfp_realnvp.flows import RealNVP

  rng = np.random.default_rng(0)
  images = rng.uniform(0, 16, size=[3 * 16, 8, 8, 1]).astype(np.float32)
  labels = rng.integers(0, 10, size=[3 * 16]).astype(np.int32)
  strategy_by_name = {name: strategies.get_strategy(name) for name in ("default", "mirrored")}
  report = {}
  for kind, context in (("conditional", {"conditional_event_shape": (10,)}),):
    with_labels = bool(context)
    global_batches = tf.data.Dataset.from_tensor_slices((images, labels) if with_labels else images).batch(16)
    runs = {}
    for strategy_name, strategy in strategy_by_name.items():
      trainer = _sgd_trainer(
        strategy,
        lambda context=context: RealNVP.from_preset("digits", **TINY_MODEL, **context),
        label_counts=data.label_counts("digits", "train") if with_labels else None,
        dequantization="variational",
      )
      variables = [*trainer.flow.variables, *trainer.dequantizer.variables]
      if runs:
        for variable, value in zip(variables, runs["default"]["initial"]):
          variable.assign(value)
      initial = [variable.numpy() for variable in variables]
      losses = [
        float(trainer.train_step(batch)[0])
        for batch in strategy.experimental_distribute_dataset(global_batches)
      ]
      test = strategy.distribute_datasets_from_function(
        lambda input_context, with_labels=with_labels: data.load(
          "digits",
          "test[:45]",
          batch_size=16,
          training=False,
          input_context=input_context,
          with_labels=with_labels,
        )
      )
      runs[strategy_name] = dict(
        initial=initial,
        losses=losses,
        final=[variable.numpy() for variable in variables],
        dequantizer_change=max(
          float(np.max(np.abs(variable.numpy() - value)))
          for variable, value in zip(trainer.dequantizer.variables, initial[len(trainer.flow.variables) :])
        ),
        replicas=strategy.num_replicas_in_sync,
        metrics=[trainer.evaluate_metrics(test, draws) for draws in (1, 3)],
        checkpointed="dequantizer" in tf.train.TrackableView(trainer.checkpoint).children(trainer.checkpoint),
      )
    one, two = runs["default"], runs["mirrored"]
    report[kind] = dict(
      replicas=[one["replicas"], two["replicas"]],
      loss_difference=float(np.max(np.abs(np.subtract(one["losses"], two["losses"])))),
      weight_difference=max(float(np.max(np.abs(a - b))) for a, b in zip(one["final"], two["final"])),
      dequantizer_change=one["dequantizer_change"],
      metrics=[one["metrics"], two["metrics"]],
      checkpointed=[one["checkpointed"], two["checkpointed"]],
    )
  with open(out_path, "w") as file:
    json.dump(report, file)


def worker(index, port0, port1, workdir, out_path):
  """One of two `multi_worker_mirrored` workers on 127.0.0.1; saves its final weights to `out_path`."""
  os.environ["TF_CONFIG"] = json.dumps(
    {
      "cluster": {"worker": [f"127.0.0.1:{port0}", f"127.0.0.1:{port1}"]},
      "task": {"type": "worker", "index": int(index)},
    }
  )
  import numpy as np

  from tfp_realnvp.training import train_lib

  config = tiny_config(
    strategy="multi_worker_mirrored",
    num_train_steps=3,
    log_every_steps=1,
    checkpoint_every_steps=3,
    eval_every_steps=0,
    model_overrides={**TINY_MODEL, "dropout": 0.2},
  )
  result = train_lib.train_and_evaluate(config, workdir)
  np.savez(
    out_path,
    *[variable.numpy() for variable in result.flow.variables],
    step=result.step,
    test_bits_per_dim=result.metrics["test_bits_per_dim"],
  )
  sys.stdout.flush()
  os._exit(0)  # collective-op threads can keep a finished worker alive


def batch_norm_statistics_mirrored(out_path):
  """A tiny flow trained with SGD and an EMA of its weights on the same global batches from the same weights, on
  1 device and on 2 mirrored logical CPUs, then its batch-norm statistics re-estimated on the same 3 global
  batches: the statistics of each replica and strategy, how far they moved from the running averages, the
  bits/dim evaluated with them (45 digits test images), and how much the training's own state changed."""
  from tfp_realnvp.training import strategies

  strategies.configure_cpu_devices(2)
  import numpy as np

  from tfp_realnvp import data

  global_batches = _uniform_batches(6)
  runs, initial = {}, None
  for strategy_name in ("default", "mirrored"):
    strategy = strategies.get_strategy(strategy_name)
    trainer = _sgd_trainer(strategy, learning_rate=0.2, ema_decay=0.5, batch_norm_batches=3)
    result = _train_on(trainer, global_batches, initial)
    initial = result["initial"]
    state = [variable.numpy() for variable in trainer.flow.variables]
    trainer.estimate_batch_norm_statistics(
      lambda: iter(strategy.experimental_distribute_dataset(global_batches.skip(2)))
    )
    statistics = trainer.batch_norm_statistics
    copies = [[copy.numpy() for copy in strategy.experimental_local_results(v)] for v in statistics.values]
    running = [v.numpy() for v in statistics.running_averages]
    test = strategy.distribute_datasets_from_function(
      lambda context: data.load("digits", "test[:45]", batch_size=16, training=False, input_context=context)
    )
    runs[strategy_name] = dict(
      copies=copies,
      change=max(float(np.max(np.abs(c[0] - r))) for c, r in zip(copies, running)),
      bits_per_dim=trainer.evaluate_metrics(test)["bits_per_dim"],
      state_change=max(float(np.max(np.abs(v.numpy() - s))) for v, s in zip(trainer.flow.variables, state)),
    )
  one, two = runs["default"], runs["mirrored"]
  report = dict(
    replica_copies=[len(one["copies"][0]), len(two["copies"][0])],
    replica_difference=max(float(np.max(np.abs(c[0] - c[-1]))) for c in two["copies"]),
    # Relative to the statistic (a variance can be in the hundreds), at least 1.
    strategy_difference=max(
      float(np.max(np.abs(a[0] - b[0]) / np.maximum(np.abs(a[0]), 1.0)))
      for a, b in zip(one["copies"], two["copies"])
    ),
    change=min(one["change"], two["change"]),
    bits_per_dim=[one["bits_per_dim"], two["bits_per_dim"]],
    training_state_change=max(one["state_change"], two["state_change"]),
  )
  with open(out_path, "w") as file:
    json.dump(report, file)


def train(workdir, num_train_steps):
  """A long single-process run, checkpointing every 2 steps, for the kill-and-resume test."""
  from tfp_realnvp.training import train_lib

  config = tiny_config(
    num_train_steps=int(num_train_steps), log_every_steps=1, checkpoint_every_steps=2, eval_every_steps=0
  )
  train_lib.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  programs = {
    "mirrored": mirrored,
    "conditional_mirrored": conditional_mirrored,
    "ema_mirrored": ema_mirrored,
    "variational_mirrored": variational_mirrored,
    "batch_norm_statistics_mirrored": batch_norm_statistics_mirrored,
    "worker": worker,
    "train": train,
  }
  programs[sys.argv[1]](*sys.argv[2:])

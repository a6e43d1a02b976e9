"""Training configuration: one dataclass, its defaults (the bundled-digits headline run) and JSON.

```python
config = configs.get_config()                         # the digits headline run
config = configs.get_config("cifar10")                # the paper's model, the digits-chosen options
config = dataclasses.replace(config, batch_size=32, strategy="mirrored", num_cpu_devices=2)
```
"""

import dataclasses
import json
import math
import numbers

__all__ = ["FIXED", "FREE", "WITH_FLAG", "ConfigError", "TrainConfig", "from_json", "get_config", "to_json"]


COMPUTE_DTYPES = (None, "float32", "bfloat16", "float16")
CONDITIONS = (None, "label")
CONTEXT_ENTERS = ("couplings", "base")  # `flows.CONTEXT_ENTERS`; configs import no TensorFlow
# The share of all-zeros contexts a class-conditional run trains with by default (measured: `label_dropout`).
CONDITIONAL_LABEL_DROPOUT = 0.2
DEQUANTIZATIONS = ("uniform", "variational")
# Training batches whose mean statistics replace the running averages for evaluation (`batch_norm_batches`) on
# other datasets than the digits: on Fashion-MNIST 5 to 200 gave the same validation bits/dim within 0.003
# (docs/results/quality.md); 25 costs about 5 s per estimate on 2 cores.
DEFAULT_BATCH_NORM_BATCHES = 25

# How a field may differ from the config a workdir's run started with (`field.metadata["on_resume"]`, checked by
# `workdirs.check_config`): the model and the data never; the optimization only when named in
# `allow_config_change`; the loop, output and distribution settings freely.
FIXED, WITH_FLAG, FREE = "fixed", "with_flag", "free"

# Fields added after `config.json` was first written, with the value older runs had: a config.json without them
# still loads. Every other field must be in the file.
_ADDED_FIELDS = {
  "train_split": None,
  "eval_split": None,
  "condition": None,
  "label_dropout": 0.0,
  "logit_alpha": 0.05,
  "ema_decay": 0.0,
  "dequantization": "uniform",
  "num_importance_samples": 1,
  "batch_norm_batches": 0,
  "max_train_minutes": None,
  "context_enters": "couplings",
  "class_loss_weight": 0.0,
}


class ConfigError(ValueError):
  """A configuration value that cannot work; its message is one line naming the setting."""


def _field(default, help, choices=None, on_resume=FIXED):
  """A `TrainConfig` field: its default, a one-line `help` (the `train.py` flag's), the allowed `choices` and
  how it may change when a run resumes (`on_resume`: `FIXED`, `WITH_FLAG` or `FREE`)."""
  metadata = {"help": help, "on_resume": on_resume}
  if choices is not None:
    metadata["choices"] = choices
  if isinstance(default, dict):
    return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything `train_lib.train_and_evaluate` needs besides the workdir.

  Fields are grouped as data, model, speed, optimization, distribution, loop and output settings. Each
  field's `metadata` holds its one-line `help`, where the values are a fixed set its `choices`, and how it may
  change when a run resumes (`on_resume`): the data and model are `FIXED`; the optimization settings and the
  input seed are `WITH_FLAG`; `num_train_steps` (with `cosine` decay, more steps stretch the rest of the
  schedule), `jit_compile` and the distribution, loop and output settings are `FREE`. `train.py` makes one flag
  per field from these.
  """

  # Data.
  dataset: str = _field(
    "digits",
    "`digits` (bundled), a tfds name such as mnist or cifar10, dir:PATH (image files) or idx:PATH (IDX files).",
  )
  data_dir: str | None = _field(None, "tfds data directory (None: tfds's default).")
  image_size: int | None = _field(None, "Resize images to this height and width (None: native).")
  train_split: str | None = _field(
    None, "Split to train on and take `p(y)` from (None: the dataset's), e.g. train[:1200] to validate."
  )
  eval_split: str | None = _field(None, "Split to evaluate on (None: the dataset's), e.g. train[1200:].")
  condition: str | None = _field(
    None,
    "`label`: model `p(x | y)` on the one-hot class label and report marginal bits/dim and accuracy "
    "(None: unconditional `p(x)`).",
    choices=CONDITIONS,
  )
  # Chosen on the digits fold that validates on the first 300 training images (fit train[300:], validate
  # train[:300]), where, as on the test split, the class-conditional marginal bits/dim was above the
  # unconditional model's; 0.2 brought it below (figures: docs/results/quality.md).
  label_dropout: float | None = _field(
    None,
    "`condition=label`: the share of training images whose context is all zeros instead of their one-hot label "
    "(no class), so the class densities share what they have in common (None: "
    f"{CONDITIONAL_LABEL_DROPOUT} with `condition=label`, else 0).",
    on_resume=WITH_FLAG,
  )
  context_enters: str = _field(
    "couplings",
    "`condition=label`: where the label enters the flow: `couplings` (every conditioner) or `base` (only the "
    "base's mean, `p(x | y) = N(g(x); mu_y, I) |det dg/dx|`: one flow pass classifies).",
    choices=CONTEXT_ENTERS,
  )

  # Model: `RealNVP.from_preset(preset or the dataset's preset, **model_overrides)`.
  preset: str | None = _field(None, "RealNVP preset (None: the dataset's).")
  model_overrides: dict[str, object] = _field(
    {}, "Keyword arguments that override the preset's (the digits preset has its measured dropout, 0.4)."
  )
  logit_alpha: float | None = _field(
    None,
    "The logit preprocessing's alpha (None: the preset's): 0 puts all mass on the pixel box (the digits "
    "preset's), the paper's 0.05 (the other presets') some outside it.",
  )
  # Chosen on the digits validation split (fit train[:1200], validate train[1200:], bench/quality_table.py):
  # variational beat uniform at K = 1 and K = 100 with either preprocessing, and box + variational was the best
  # cell of the table (figures: docs/results/quality.md).
  dequantization: str = _field(
    "variational",
    "`variational` (the default): a learned `q(u | v)` trained jointly, for the tighter bound "
    "(dequantization.VariationalDequantizer), or `uniform` noise (the paper's).",
    choices=DEQUANTIZATIONS,
  )

  # Speed (see docs/speed.md).
  compute_dtype: str | None = _field(
    None,
    "Conditioner arithmetic (None: float32). On CPUs with AVX512-BF16 or AMX choose bfloat16: faster train "
    "steps, the same digits test bits/dim within 0.02 (docs/speed.md); also for TPUs. float16 for GPUs, "
    "with dynamic loss scaling.",
    choices=COMPUTE_DTYPES,
  )
  jit_compile: bool = _field(False, "Compile the train step with XLA (slower on CPUs).", on_resume=FREE)

  # Optimization (paper: Adam 1e-3, L2 5e-5 on weight-norm and tanh scales, clip norm 100).
  batch_size: int = _field(64, "Global batch size, split evenly across replicas.", on_resume=WITH_FLAG)
  # Chosen on the digits validation split (fit train[:1200], validate train[1200:], seed 0, box + variational):
  # 3000 steps beat 2000 in bits/dim and in the class-conditional `-log p(label | x)`, and beat dropout 0.3
  # and 0.5 at 2000 steps (figures: docs/results/quality.md).
  num_train_steps: int = _field(3000, "Training steps.", on_resume=FREE)
  learning_rate: float = _field(1e-3, "Adam learning rate.", on_resume=WITH_FLAG)
  warmup_steps: int = _field(100, "Linear learning-rate warm-up steps.", on_resume=WITH_FLAG)
  learning_rate_decay: str = _field(
    "cosine",
    "`cosine` to 0 at `num_train_steps`, or `constant`.",
    choices=("cosine", "constant"),
    on_resume=WITH_FLAG,
  )
  l2_coefficient: float = _field(5e-5, "L2 on weight-norm and tanh scales.", on_resume=WITH_FLAG)
  class_loss_weight: float = _field(
    0.0,
    "`context_enters=base`: add this times `-log p(label | x)` (nats per image) to the bits/dim loss, a "
    "hybrid objective that trains the classifier too (0: bits/dim only).",
    on_resume=WITH_FLAG,
  )
  clip_global_norm: float = _field(100.0, "Gradient clipping by global norm.", on_resume=WITH_FLAG)
  max_consecutive_non_finite: int = _field(
    10, "Skipped non-finite steps in a row before stopping.", on_resume=FREE
  )
  # Chosen on the digits validation split (train[1200:]): 0.99 evaluates as well as the training weights and
  # 0.999 slightly worse; with the cosine decay to 0 no average beat the final weights
  # (docs/results/quality.md).
  ema_decay: float = _field(
    0.99,
    "Decay of the exponential moving average of the weights used for evaluation, samples and export "
    "(digits 0.99, other datasets 0.999; 0: off; warmed up as min(decay, (1 + n) / (10 + n)) after n "
    "updates).",
  )

  # Distribution.
  strategy: str = _field(
    "default", "default | one_device | mirrored | multi_worker_mirrored | tpu.", on_resume=FREE
  )
  num_cpu_devices: int = _field(
    1, "Split the CPU into this many logical devices (for `mirrored`).", on_resume=FREE
  )
  tpu_address: str | None = _field(None, "TPU name or grpc:// address for `strategy=tpu`.", on_resume=FREE)

  # Loop.
  log_every_steps: int = _field(250, "Steps between log lines.", on_resume=FREE)
  checkpoint_every_steps: int = _field(500, "Steps between checkpoints.", on_resume=FREE)
  eval_every_steps: int = _field(500, "Steps between test evaluations, 0: only at the end.", on_resume=FREE)
  max_train_minutes: float | None = _field(
    None,
    "Stop training at the first step past this many minutes of training (every run of the workdir counted: "
    "train_seconds.json), then evaluate, sample and checkpoint as at num_train_steps (None: no limit). The "
    "learning-rate schedule is by steps: with `cosine` the rate has not reached 0 when the budget stops the "
    "run, so set num_train_steps to what the budget allows (steps/s x seconds) for the full decay.",
    on_resume=FREE,
  )
  max_checkpoints_to_keep: int = _field(3, "Checkpoints kept in the workdir.", on_resume=FREE)

  # Output.
  num_samples: int = _field(64, "Samples per grid.", on_resume=FREE)
  sample_temperatures: tuple[float, ...] = _field(
    (1.0, 0.7), "Prior temperatures of the sample grids.", on_resume=FREE
  )
  seed: int = _field(0, "Seed of the initial weights, dropout and the input pipeline.", on_resume=WITH_FLAG)
  batch_norm_batches: int = _field(
    0,
    "Before every evaluation, sample grid and checkpoint, re-estimate every batch norm's running averages for "
    "the evaluated (EMA) weights as the mean batch statistics of this many training batches, without changing "
    "the training's own (0: off, evaluate with the training's running averages; other datasets than digits: "
    f"{DEFAULT_BATCH_NORM_BATCHES}).",
    on_resume=FREE,
  )
  num_importance_samples: int = _field(
    100,
    "Draws K of the importance-weighted test bits/dim reported beside K = 1 (1: K = 1 only).",
    on_resume=FREE,
  )

  def validate(self):
    """Raises `ConfigError` for a value no run can use (dataset and preset names are checked
    where they are resolved)."""
    for name in (
      "batch_size",
      "num_train_steps",
      "log_every_steps",
      "checkpoint_every_steps",
      "max_checkpoints_to_keep",
      "num_samples",
      "num_cpu_devices",
      "max_consecutive_non_finite",
      "num_importance_samples",
    ):
      _check(
        _is_int(getattr(self, name)) and getattr(self, name) >= 1,
        name,
        "an integer >= 1",
        getattr(self, name),
      )
    for name in ("warmup_steps", "eval_every_steps", "batch_norm_batches"):
      _check(
        _is_int(getattr(self, name)) and getattr(self, name) >= 0,
        name,
        "an integer >= 0",
        getattr(self, name),
      )
    _check(
      self.image_size is None or (_is_int(self.image_size) and self.image_size > 0),
      "image_size",
      "a positive integer or None",
      self.image_size,
    )
    _check(self.seed is not None and _is_int(self.seed), "seed", "an integer", self.seed)
    for name in ("learning_rate", "l2_coefficient", "clip_global_norm", "ema_decay"):
      _check(_is_finite(getattr(self, name)), name, "a finite number", getattr(self, name))
    _check(
      self.max_train_minutes is None or (_is_finite(self.max_train_minutes) and self.max_train_minutes > 0),
      "max_train_minutes",
      "None or a positive number",
      self.max_train_minutes,
    )
    for name in ("logit_alpha", "label_dropout", "class_loss_weight"):
      value = getattr(self, name)
      _check(value is None or _is_finite(value), name, "None or a finite number", value)
    _check(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
    _check(self.l2_coefficient >= 0, "l2_coefficient", ">= 0", self.l2_coefficient)
    _check(self.clip_global_norm > 0, "clip_global_norm", "> 0", self.clip_global_norm)
    _check(
      isinstance(self.sample_temperatures, (tuple, list))
      and len(self.sample_temperatures) >= 1
      and all(_is_finite(t) and t > 0 for t in self.sample_temperatures),
      "sample_temperatures",
      "one or more positive finite numbers",
      self.sample_temperatures,
    )
    for field in dataclasses.fields(self):
      choices = field.metadata.get("choices")
      if choices is not None:
        value = getattr(self, field.name)
        _check(value in choices, field.name, f"one of {', '.join(map(str, choices))}", value)
    _check(isinstance(self.jit_compile, bool), "jit_compile", "True or False", self.jit_compile)
    _check(isinstance(self.model_overrides, dict), "model_overrides", "a dict", self.model_overrides)
    _check(
      self.logit_alpha is None or 0.0 <= self.logit_alpha < 0.5,
      "logit_alpha",
      "None or in [0, 0.5)",
      self.logit_alpha,
    )
    _check(0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1) (0: off)", self.ema_decay)
    _check(
      self.label_dropout is None
      or (0.0 <= self.label_dropout < 1.0 and (self.condition == "label" or not self.label_dropout)),
      "label_dropout",
      "None or in [0, 1), and 0 unless `condition` is label",
      self.label_dropout,
    )
    _check(
      self.context_enters == "couplings" or self.condition == "label",
      "context_enters",
      "couplings unless `condition` is label",
      self.context_enters,
    )
    _check(
      self.class_loss_weight is not None
      and self.class_loss_weight >= 0
      and (not self.class_loss_weight or self.context_enters == "base"),
      "class_loss_weight",
      ">= 0, and 0 unless `context_enters` is base (with `condition=label`)",
      self.class_loss_weight,
    )
    _check(
      not (self.class_loss_weight and self.label_dropout),
      "label_dropout",
      "None or 0 with a `class_loss_weight` (the hybrid loss scores every image under every label)",
      self.label_dropout,
    )
    for name in ("train_split", "eval_split"):
      value = getattr(self, name)
      _check(value is None or (isinstance(value, str) and value), name, "a split name or None", value)

  @property
  def effective_label_dropout(self):
    """`label_dropout`, with None resolved: `CONDITIONAL_LABEL_DROPOUT` for `condition="label"` with the label
    in the couplings, else 0 (with the label in the base only, an all-zeros context is just another class
    mean)."""
    if self.label_dropout is not None:
      return self.label_dropout
    return (
      CONDITIONAL_LABEL_DROPOUT if self.condition == "label" and self.context_enters == "couplings" else 0.0
    )


def _is_int(value):
  """An integer, not a bool (`True` is an `int` to Python, not a count to a config)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value):
  """A finite real number, not a bool or a string."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check(condition, name, expected, got):
  if not condition:
    raise ConfigError(f"`{name}` must be {expected}; got {got!r}.")


def get_config(dataset="digits"):
  """The default config for `dataset`: the tuned digits run, or the paper's model and optimizer otherwise.

  Every dataset gets the options chosen on the digits validation split: box-exact preprocessing
  (`logit_alpha=0`), variational dequantization, an EMA of the weights for evaluation, and the test figure at
  `K = 1` and importance-weighted at `K = 100` draws. For a tfds dataset (or `dir:PATH`, `idx:PATH`):

  - `ema_decay=0.999`: with a constant learning rate the weights never settle but keep moving by the step
    size's gradient noise, which an average over the last `1 / (1 - 0.999) = 1000` steps (1.3 CIFAR-10 epochs
    at batch 64, 1.25% of the 80,000 steps, so it lags little) smooths out; 0.99 would average only 100.
    Flow++'s CIFAR-10 run uses 0.999 with a constant rate at batch 64, Glow's code one epoch (`1 - 1/782`).
    Reasoned, not measured here (that needs the real data and a GPU); on the digits, whose cosine decay to 0
    leaves little to average, no decay beat the final weights, and 0.99 matched them.
  - `num_importance_samples=100`: the `K` draws cost `K` forward passes per test image, once at the end. A
    train step costs about three forward passes, so for the CIFAR-10 preset 100 draws of the 10,000 test
    images add a few percent to the 80,000 train steps at batch 64, and K = 1000 would add more than half
    (the arithmetic: docs/quality.md).

  The paper's recipe stays one set of flags away: `--logit_alpha=0.05 --dequantization=uniform
  --ema_decay=0` (`dataclasses.replace(config, logit_alpha=0.05, dequantization="uniform", ema_decay=0.0)`).
  The paper publishes no step count; `num_train_steps` for tfds datasets is a starting point (about 100
  CIFAR-10 epochs at batch 64), and the paper uses no dropout.
  """
  if dataset == "digits":
    return TrainConfig()
  return TrainConfig(
    dataset=dataset,
    model_overrides={},
    logit_alpha=0.0,
    dequantization="variational",
    ema_decay=0.999,
    num_importance_samples=100,
    num_train_steps=80_000,
    warmup_steps=0,
    learning_rate_decay="constant",
    log_every_steps=100,
    checkpoint_every_steps=1000,
    eval_every_steps=5000,
    batch_norm_batches=DEFAULT_BATCH_NORM_BATCHES,
  )


def to_json(config):
  """`config` as indented JSON text."""
  return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n"


def from_json(text, source="the config"):
  """The config that `to_json` wrote as `text` (read from `source`, named in errors).

  Raises:
    ConfigError: `text` is not a JSON object, or has a key that is no field of `TrainConfig`, or lacks one
      (fields in `_ADDED_FIELDS` may be missing: they take the value older runs had).
  """
  try:
    values = json.loads(text)
  except json.JSONDecodeError as error:
    raise ConfigError(
      f"{source} must be the JSON that configs.to_json writes; it is not JSON: {error}."
    ) from None
  if not isinstance(values, dict):
    raise ConfigError(f"{source} must be a JSON object of TrainConfig fields; got {type(values).__name__}.")
  names = {field.name for field in dataclasses.fields(TrainConfig)}
  unknown = sorted(set(values) - names)
  missing = sorted(names - set(values) - set(_ADDED_FIELDS))
  if unknown or missing:
    problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + (
      [f"missing key(s) {', '.join(missing)}"] if missing else []
    )
    raise ConfigError(
      f"{source} must hold exactly the fields of TrainConfig; it has {' and '.join(problems)}."
    )
  values = {**_ADDED_FIELDS, **values}
  if isinstance(values["sample_temperatures"], list):
    values["sample_temperatures"] = tuple(values["sample_temperatures"])
  return TrainConfig(**values)

"""Training configuration: one dataclass, its defaults (the bundled-digits headline run) and JSON.

```python
config = configs.get_config()                         # the digits headline run
config = configs.get_config("cifar10")                # the paper's recipe for a tfds dataset
config = dataclasses.replace(config, batch_size=32, strategy="mirrored", num_cpu_devices=2)
```
"""

import dataclasses
import json

__all__ = ["ConfigError", "TrainConfig", "from_json", "get_config", "to_json"]


COMPUTE_DTYPES = (None, "float32", "bfloat16", "float16")


class ConfigError(ValueError):
  """A configuration value that cannot work; its message is one line naming the setting."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything `train_lib.train_and_evaluate` needs besides the workdir.

  Fields are grouped as data, model, optimization, distribution, loop and output settings;
  `batch_size` is the global batch, split evenly across replicas.
  """

  # Data.
  dataset: str = "digits"  # tfds name, `digits` (bundled) or a directory of images
  data_dir: str | None = None  # tfds data directory (`None`: tfds's default)
  image_size: int | None = None  # resize images to `image_size x image_size` (`None`: native)

  # Model: `RealNVP.from_preset(preset or the dataset's preset, **model_overrides)`.
  preset: str | None = None
  # Keyword arguments that override the preset's (the digits preset already has its measured dropout, 0.4).
  model_overrides: dict = dataclasses.field(default_factory=dict)

  # Speed (see bench/README.md): the conditioners' compute dtype, `float32` (None), `bfloat16` (CPUs with
  # AVX512-BF16 or AMX, TPUs) or `float16` (GPUs, with dynamic loss scaling); XLA for the train step.
  compute_dtype: str | None = None
  jit_compile: bool = False

  # Optimization (paper: Adam 1e-3, L2 5e-5 on weight-norm and tanh scales, clip norm 100).
  batch_size: int = 64
  num_train_steps: int = 2000
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  learning_rate_decay: str = "cosine"  # `cosine` to 0 at `num_train_steps`, or `constant`
  l2_coefficient: float = 5e-5
  clip_global_norm: float = 100.0
  max_consecutive_non_finite: int = 10  # skipped non-finite steps in a row before stopping

  # Distribution.
  strategy: str = "default"
  num_cpu_devices: int = 1  # split the CPU into this many logical devices (for `mirrored`)
  tpu_address: str | None = None

  # Loop.
  log_every_steps: int = 250
  checkpoint_every_steps: int = 500
  eval_every_steps: int = 500  # 0: evaluate only at the end
  max_checkpoints_to_keep: int = 3

  # Output.
  num_samples: int = 64
  sample_temperatures: tuple = (1.0, 0.7)
  seed: int = 0

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
    ):
      _check(
        isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
        name,
        "an integer >= 1",
        getattr(self, name),
      )
    for name in ("warmup_steps", "eval_every_steps"):
      _check(
        isinstance(getattr(self, name), int) and getattr(self, name) >= 0,
        name,
        "an integer >= 0",
        getattr(self, name),
      )
    _check(
      self.image_size is None or (isinstance(self.image_size, int) and self.image_size > 0),
      "image_size",
      "a positive integer or None",
      self.image_size,
    )
    _check(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
    _check(self.l2_coefficient >= 0, "l2_coefficient", ">= 0", self.l2_coefficient)
    _check(self.clip_global_norm > 0, "clip_global_norm", "> 0", self.clip_global_norm)
    _check(
      self.learning_rate_decay in ("cosine", "constant"),
      "learning_rate_decay",
      "one of cosine, constant",
      self.learning_rate_decay,
    )
    _check(
      len(self.sample_temperatures) >= 1 and all(t > 0 for t in self.sample_temperatures),
      "sample_temperatures",
      "one or more positive numbers",
      self.sample_temperatures,
    )
    _check(
      self.compute_dtype in COMPUTE_DTYPES,
      "compute_dtype",
      f"one of {', '.join(str(d) for d in COMPUTE_DTYPES)}",
      self.compute_dtype,
    )
    _check(isinstance(self.jit_compile, bool), "jit_compile", "True or False", self.jit_compile)
    _check(isinstance(self.model_overrides, dict), "model_overrides", "a dict", self.model_overrides)


def _check(condition, name, expected, got):
  if not condition:
    raise ConfigError(f"`{name}` must be {expected}; got {got!r}.")


def get_config(dataset="digits"):
  """The default config for `dataset`: the tuned digits run, or the paper's recipe otherwise.

  The paper publishes no step count; `num_train_steps` for tfds datasets is a starting point
  (about 80 CIFAR-10 epochs at batch 64), and the paper uses no dropout.
  """
  if dataset == "digits":
    return TrainConfig()
  return TrainConfig(
    dataset=dataset,
    model_overrides={},
    num_train_steps=80_000,
    warmup_steps=0,
    learning_rate_decay="constant",
    log_every_steps=100,
    checkpoint_every_steps=1000,
    eval_every_steps=5000,
  )


def to_json(config):
  """`config` as indented JSON text."""
  return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n"


def from_json(text):
  """The config that `to_json` wrote as `text`."""
  values = json.loads(text)
  values["sample_temperatures"] = tuple(values["sample_temperatures"])
  return TrainConfig(**values)

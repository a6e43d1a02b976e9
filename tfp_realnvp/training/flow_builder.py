"""`build_flow(config)`: the `RealNVP` a `TrainConfig` describes, checked against the images of its dataset.

```python
config = configs.get_config()                     # digits
flow = flow_builder.build_flow(config)            # RealNVP.from_preset("digits", **config.model_overrides)
```

Training (`train_lib`), export (`checkpoints.restore_flow`) and the Keras path (`FlowModel.from_train_config`)
all build their flow here, so a checkpoint written by one restores into the others.
"""

import dataclasses

from tfp_realnvp import data
from tfp_realnvp.flows import RealNVP
from tfp_realnvp.training.configs import ConfigError

__all__ = ["build_flow", "dataset_spec"]


def dataset_spec(config):
  """The `data.DatasetSpec` of `config.dataset` at `config.image_size`, with `config.train_split` and
  `config.eval_split` where set; a bad dataset is a `ConfigError`."""
  try:
    spec = data.dataset_spec(config.dataset, image_size=config.image_size, data_dir=config.data_dir)
  except (ValueError, FileNotFoundError) as error:
    raise ConfigError(str(error)) from error
  return dataclasses.replace(
    spec, train_split=config.train_split or spec.train_split, eval_split=config.eval_split or spec.eval_split
  )


# Model keywords a config sets through its own fields: an override may repeat the field's value, not contradict it.
_SET_BY_FIELDS = {
  "compute_dtype": "compute_dtype",
  "logit_alpha": "logit_alpha",
  "context_enters": "context_enters",
}


def _check_overrides(config, overrides):
  """Refuses, before anything is built or written, overrides that training cannot use or that contradict a
  config field (one line naming both)."""
  if "conditional_event_shape" in overrides:
    raise ConfigError(
      "`model_overrides` cannot set `conditional_event_shape`: training gives the flow a context only with "
      f"`condition=label` (the one-hot label, which sets it); got conditional_event_shape="
      f"{overrides['conditional_event_shape']!r}."
    )
  if "dtype" in overrides and overrides["dtype"] not in ("float32", None):
    raise ConfigError(
      "`model_overrides` `dtype` must be float32 for training (its input pipeline gives float32 images; "
      f"`compute_dtype` sets the conditioners' arithmetic); got dtype={overrides['dtype']!r}."
    )
  for key, field in _SET_BY_FIELDS.items():
    value = getattr(config, field)
    if key in overrides and value is not None and overrides[key] != value:
      raise ConfigError(
        f"`{field}={value!r}` and `model_overrides` `{key}={overrides[key]!r}` contradict each other; set one."
      )


def build_flow(config, spec=None):
  """`RealNVP.from_preset(preset, **overrides)` for `config`, checked against the images of its dataset.

  `preset` is `config.preset`, or the dataset's own preset; `overrides` are `config.model_overrides`, plus
  `compute_dtype=config.compute_dtype` and `logit_alpha=config.logit_alpha` when set, plus `event_shape` of the resized images when
  `config.image_size` is set (unless the overrides give one), plus `conditional_event_shape=(num_classes,)`
  (the one-hot label) and `context_enters=config.context_enters` for `config.condition == "label"`. `spec` (default: `dataset_spec(config)`) is the
  dataset the flow will model.

  Raises:
    ConfigError: `condition=label` on a dataset without labels, no preset, a preset or override the flow
      refuses, or a flow whose image shape or `num_bits` is not the dataset's (one line naming the setting).
  """
  spec = dataset_spec(config) if spec is None else spec
  if config.condition == "label" and spec.num_classes is None:
    raise ConfigError(
      f"`condition=label` needs class labels, but dataset {config.dataset!r} has none; labelled are 'digits', "
      "IDX folders (idx:PATH) and tfds datasets with a 'label' ClassLabel feature such as 'mnist' and 'cifar10'."
    )
  preset = config.preset or spec.preset
  if preset is None:
    raise ConfigError(f"Dataset {config.dataset!r} has no default preset; set `preset`.")
  overrides = dict(config.model_overrides)
  _check_overrides(config, overrides)
  if config.compute_dtype is not None:
    overrides["compute_dtype"] = config.compute_dtype
  if config.logit_alpha is not None:
    overrides["logit_alpha"] = config.logit_alpha
  if config.image_size is not None:
    overrides.setdefault("event_shape", spec.image_shape)
  if config.condition == "label":
    overrides["conditional_event_shape"] = (spec.num_classes,)
    overrides["context_enters"] = config.context_enters
  try:
    flow = RealNVP.from_preset(preset, **overrides)
  except (ValueError, TypeError) as error:
    raise ConfigError(f"`preset={preset}` with {overrides}: {error}") from error
  if tuple(flow.event_shape) != tuple(spec.image_shape) or flow.num_bits != spec.num_bits:
    raise ConfigError(
      f"`preset={preset}` models {flow.num_bits}-bit images of shape {tuple(flow.event_shape)}, but dataset "
      f"{config.dataset!r} gives {spec.num_bits}-bit images of shape {tuple(spec.image_shape)}; set `image_size` "
      "or a matching `preset`."
    )
  return flow

"""RealNVP normalizing flows (Dinh, Sohl-Dickstein and Bengio, 2016) for TensorFlow Probability.

Public names are imported lazily so that `import tfp_realnvp` stays cheap and each submodule
(`bijectors`, `networks`, `flows`, `data`, `training`, `serving`) can be used on its own.
"""

import importlib

_PUBLIC_NAMES = {
  "FlowModel": "tfp_realnvp.keras_model",
  "ImageRealNVP": "tfp_realnvp.flows",
  "RealNVP": "tfp_realnvp.flows",
  "VectorRealNVP": "tfp_realnvp.flows",
  "export_saved_model": "tfp_realnvp.serving.export",
  "load_distribution": "tfp_realnvp.serving.saved_model_distribution",
  "train_and_evaluate": "tfp_realnvp.training.train_lib",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name):
  if name not in _PUBLIC_NAMES:
    raise AttributeError(f"module 'tfp_realnvp' has no attribute {name!r}")
  return getattr(importlib.import_module(_PUBLIC_NAMES[name]), name)


def __dir__():
  return sorted(list(globals()) + __all__)

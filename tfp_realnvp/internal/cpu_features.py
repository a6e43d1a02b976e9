"""The CPU's model name and bfloat16 instructions, and the trainer's start-up hint to use them.

```python
cpu = cpu_features.read_cpu_info()        # from /proc/cpuinfo (Linux); unknown elsewhere
cpu.bfloat16_flags                          # ('avx512_bf16',) on an AMD Zen 4, ('amx_bf16', 'avx512_bf16') on a Sapphire Rapids
cpu.bfloat16_kind                           # 'avx512_bf16' on the Zen 4, 'amx' on the Sapphire Rapids, None without either
cpu_features.bfloat16_hint(None, cpu)       # a one-line suggestion for a float32 run on such a CPU, else None
```
"""

import dataclasses

import tensorflow as tf

__all__ = [
  "BFLOAT16_FLAGS",
  "BFLOAT16_TRAIN_SPEEDUP",
  "CpuInfo",
  "bfloat16_hint",
  "parse_cpu_info",
  "read_cpu_info",
]

# The CPU flags (as Linux names them) of instructions that run bfloat16 matrix products natively: AMX tiles and
# AVX-512 dot products. Without them TensorFlow emulates bfloat16, more slowly than float32.
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")

# The bfloat16 train step's speed over float32's (`compute_dtype=bfloat16`, small and cifar10 models, batch 64,
# 2 cores, same run) by `CpuInfo.bfloat16_kind`, as measured in docs/results/speed.md: AMX tiles (an Intel Xeon,
# `lscpu` model 207) and AVX512-BF16 without AMX (an AMD Zen 4).
BFLOAT16_TRAIN_SPEEDUP = {"amx": "2.2-3.1x", "avx512_bf16": "1.6-1.7x"}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
  """A CPU's model name, its instruction flags and its model number (`lscpu`'s `Model:`, e.g. `'207'`; None
  where the text has none)."""

  model_name: str
  flags: frozenset
  model_number: str | None = None

  @property
  def bfloat16_flags(self):
    """The entries of `BFLOAT16_FLAGS` this CPU has, in that order."""
    return tuple(flag for flag in BFLOAT16_FLAGS if flag in self.flags)

  @property
  def bfloat16_kind(self):
    """`'amx'` with AMX-BF16 tiles, `'avx512_bf16'` with only AVX512-BF16, None with neither: the kinds of CPU
    whose speed choices are measured apart (`BFLOAT16_TRAIN_SPEEDUP`)."""
    if "amx_bf16" in self.flags:
      return "amx"
    return "avx512_bf16" if "avx512_bf16" in self.flags else None


def parse_cpu_info(text):
  """`CpuInfo` from the text of `/proc/cpuinfo` or of `lscpu` (the first `model name`, `flags` and `model`
  lines)."""
  fields = {}
  for line in text.splitlines():
    key, separator, value = line.partition(":")
    key = key.strip().lower()
    if separator and key in ("model name", "flags", "model") and key not in fields:
      fields[key] = value.strip()
  return CpuInfo(
    fields.get("model name", "unknown"), frozenset(fields.get("flags", "").split()), fields.get("model")
  )


def read_cpu_info(path="/proc/cpuinfo"):
  """`parse_cpu_info` of `path`; an unknown CPU without flags where it cannot be read (not Linux)."""
  try:
    with open(path) as file:
      return parse_cpu_info(file.read())
  except OSError:
    return CpuInfo("unknown", frozenset())


def bfloat16_hint(compute_dtype, cpu_info=None, has_gpu=None):
  """A one-line hint to train in bfloat16, for a float32 run (`compute_dtype` None or float32) on a CPU with
  `BFLOAT16_FLAGS` and no GPU; None otherwise. It only suggests: the run keeps the arithmetic it was given.

  `compute_dtype` is a name (`'float32'`) or a dtype (`tf.float32`); `cpu_info` defaults to `read_cpu_info()`,
  `has_gpu` to whether TensorFlow sees a GPU.
  """
  if getattr(compute_dtype, "name", compute_dtype) not in (None, "float32"):
    return None
  if has_gpu is None:
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
  if has_gpu:
    return None
  cpu_info = cpu_info or read_cpu_info()
  flags = cpu_info.bfloat16_flags
  if not flags:
    return None
  return (
    f"this CPU has {' and '.join(flags)}: --compute_dtype=bfloat16 (conditioners in bfloat16) trains "
    f"{BFLOAT16_TRAIN_SPEEDUP[cpu_info.bfloat16_kind]} faster on such a CPU with the same digits test bits/dim "
    "within 0.02 (docs/speed.md, docs/results/speed.md); this run stays float32"
  )

"""The CPU's bfloat16 flags from faked `/proc/cpuinfo` and `lscpu` text, and the start-up hint they give."""

import os
import tempfile

import tensorflow as tf
from absl.testing import parameterized

from tfp_realnvp.internal import cpu_features

# Two processors as Linux's /proc/cpuinfo lists them: only the first one's lines count.
ZEN4_CPUINFO = (
  "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n"
  "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\n"
  "processor\t: 1\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu\n"
)
SAPPHIRE_RAPIDS_LSCPU = (
  "Architecture:             x86_64\n"
  "Model name:               Intel(R) Xeon(R) Platinum 8480+\n"
  "Flags:                    fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
)
OLD_CPUINFO = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2690 v4\nflags\t\t: fpu sse2 avx2\n"


class CpuInfoTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("zen4_cpuinfo", ZEN4_CPUINFO, "AMD EPYC 9B14", ("avx512_bf16",)),
    (
      "sapphire_rapids_lscpu",
      SAPPHIRE_RAPIDS_LSCPU,
      "Intel(R) Xeon(R) Platinum 8480+",
      ("amx_bf16", "avx512_bf16"),
    ),
    ("no_bfloat16", OLD_CPUINFO, "Intel(R) Xeon(R) CPU E5-2690 v4", ()),
    ("empty", "", "unknown", ()),
  )
  def test_parses_model_name_and_bfloat16_flags(self, text, model_name, bfloat16_flags):
    cpu = cpu_features.parse_cpu_info(text)
    self.assertEqual((cpu.model_name, cpu.bfloat16_flags), (model_name, bfloat16_flags))

  @parameterized.named_parameters(
    ("zen4", ZEN4_CPUINFO, "avx512_bf16"),
    ("sapphire_rapids", SAPPHIRE_RAPIDS_LSCPU, "amx"),
    ("no_bfloat16", OLD_CPUINFO, None),
  )
  def test_kind_of_bfloat16_cpu(self, text, kind):
    self.assertEqual(cpu_features.parse_cpu_info(text).bfloat16_kind, kind)

  def test_model_number_from_proc_cpuinfo_and_lscpu(self):
    cpuinfo = (
      "processor\t: 0\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: amx_bf16\n"
    )
    lscpu = (
      "Model name:             Intel(R) Xeon(R) Processor\nModel:                  207\nFlags: amx_bf16\n"
    )
    for text in (cpuinfo, lscpu):
      cpu = cpu_features.parse_cpu_info(text)
      self.assertEqual((cpu.model_name, cpu.model_number), ("Intel(R) Xeon(R) Processor", "207"))
    self.assertIsNone(cpu_features.parse_cpu_info(ZEN4_CPUINFO).model_number)

  def test_flags_are_whole_words(self):
    cpu = cpu_features.parse_cpu_info("flags\t: avx512_bf16x amx_bf16_fake\n")
    self.assertEqual(cpu.bfloat16_flags, ())

  def test_reads_a_file_and_an_unreadable_path_is_an_unknown_cpu(self):
    with tempfile.TemporaryDirectory() as directory:
      path = os.path.join(directory, "cpuinfo")
      with open(path, "w") as file:
        file.write(ZEN4_CPUINFO)
      self.assertEqual(cpu_features.read_cpu_info(path).bfloat16_flags, ("avx512_bf16",))
      missing = cpu_features.read_cpu_info(os.path.join(directory, "missing"))
    self.assertEqual(missing, cpu_features.CpuInfo("unknown", frozenset()))


class Bfloat16HintTest(parameterized.TestCase):
  @parameterized.named_parameters(("none", None), ("name", "float32"), ("dtype", tf.float32))
  def test_float32_run_on_a_bfloat16_cpu_gets_the_hint(self, compute_dtype):
    hint = cpu_features.bfloat16_hint(compute_dtype, cpu_features.parse_cpu_info(ZEN4_CPUINFO), has_gpu=False)
    self.assertIn("--compute_dtype=bfloat16", hint)
    self.assertIn("avx512_bf16", hint)
    self.assertNotIn("\n", hint)

  def test_names_every_bfloat16_flag(self):
    cpu = cpu_features.parse_cpu_info(SAPPHIRE_RAPIDS_LSCPU)
    self.assertIn("amx_bf16 and avx512_bf16", cpu_features.bfloat16_hint(None, cpu, has_gpu=False))

  @parameterized.named_parameters(
    ("zen4", ZEN4_CPUINFO, "avx512_bf16"), ("amx", SAPPHIRE_RAPIDS_LSCPU, "amx")
  )
  def test_gives_the_speedup_measured_on_that_kind_of_cpu(self, text, kind):
    hint = cpu_features.bfloat16_hint(None, cpu_features.parse_cpu_info(text), has_gpu=False)
    self.assertIn(f"trains {cpu_features.BFLOAT16_TRAIN_SPEEDUP[kind]} faster", hint)

  @parameterized.named_parameters(
    ("bfloat16_run", "bfloat16", ZEN4_CPUINFO, False),
    ("float16_run", tf.float16, ZEN4_CPUINFO, False),
    ("cpu_without_bfloat16", None, OLD_CPUINFO, False),
    ("gpu", None, ZEN4_CPUINFO, True),
  )
  def test_no_hint(self, compute_dtype, text, has_gpu):
    cpu = cpu_features.parse_cpu_info(text)
    self.assertIsNone(cpu_features.bfloat16_hint(compute_dtype, cpu, has_gpu=has_gpu))

"""An export written by an earlier version of the package loads and answers as it did then.

`tests/data/conditional_digits_export_b74163e` was written by commit b74163e's code, before the package's
modules moved into subpackages: a class-conditional `digits` run with a variational dequantizer (one scale,
one block, four features, six steps), exported with `export/export_model.py`. `reference.npz` holds what every
signature of that export answered then, on fixed inputs.
"""

import os

import numpy as np
import tensorflow as tf

import tfp_realnvp

FIXTURE = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "data", "conditional_digits_export_b74163e"
)
EXPORT = os.path.join(FIXTURE, "export")


class OldExportTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.reference = dict(np.load(os.path.join(FIXTURE, "reference.npz")))

  def test_every_signature_answers_as_before(self):
    ref = self.reference
    signatures = tf.saved_model.load(EXPORT).signatures
    x, c = ref["x"], ref["conditional_input"]
    answer = signatures["log_prob"](x=x, conditional_input=c)
    self.assertAllClose(answer["log_prob"], ref["log_prob"], rtol=1e-5)
    self.assertAllClose(answer["bits_per_dim"], ref["bits_per_dim"], rtol=1e-5)
    z = signatures["encode"](x=x, conditional_input=c)["z"]
    self.assertAllClose(z, ref["z"], rtol=1e-5, atol=1e-5)
    self.assertAllClose(signatures["decode"](z=ref["z"], conditional_input=c)["x"], ref["decoded"], atol=1e-4)
    answer = signatures["sample"](
      num_samples=tf.constant(6), temperature=tf.constant(0.7), seed=tf.constant([1, 2]), conditional_input=c
    )
    self.assertAllClose(answer["samples"], ref["samples"], atol=1e-4)
    self.assertAllEqual(answer["images"], ref["images"])
    answer = signatures["classify"](x=x)
    self.assertAllClose(answer["log_probs"], ref["class_log_probs"], rtol=1e-5)
    self.assertAllEqual(answer["label"], ref["label"])
    answer = signatures["discrete_bits_per_dim"](
      levels=ref["levels"], num_samples=tf.constant(3), seed=tf.constant([3, 4]), conditional_input=c
    )
    self.assertAllClose(answer["bits_per_dim"], ref["discrete_bits_per_dim"], rtol=1e-5)

  def test_load_distribution_answers_as_before(self):
    ref = self.reference
    distribution = tfp_realnvp.load_distribution(EXPORT)
    self.assertEqual(distribution.event_shape, [8, 8, 1])
    log_prob = distribution.log_prob(ref["x"], conditional_input=ref["conditional_input"])
    self.assertAllClose(log_prob, ref["log_prob"], rtol=1e-5)
    bits = distribution.discrete_bits_per_dim(
      ref["levels"], num_samples=3, seed=[3, 4], conditional_input=ref["conditional_input"]
    )
    self.assertAllClose(bits, ref["discrete_bits_per_dim"], rtol=1e-5)

  def test_a_tensor_of_another_dtype_is_refused_naming_the_argument(self):
    distribution = tfp_realnvp.load_distribution(EXPORT)
    c = self.reference["conditional_input"]
    with self.assertRaisesRegex(TypeError, "`x` must be a float32 tensor, the export's dtype; got float64"):
      distribution.log_prob(tf.constant(self.reference["x"], tf.float64), conditional_input=c)
    levels = self.reference["levels"]
    with self.assertRaisesRegex(
      TypeError, "`levels` must be a float32 tensor, the export's dtype; got float64"
    ):
      distribution.discrete_bits_per_dim(tf.constant(levels, tf.float64), 3, [3, 4], c)
    self.assertAllClose(  # integer levels are taken as they are
      distribution.discrete_bits_per_dim(tf.constant(levels, tf.int32), 3, [3, 4], c),
      self.reference["discrete_bits_per_dim"],
      rtol=1e-5,
    )
    # NumPy values are converted, as before.
    self.assertAllClose(
      distribution.log_prob(self.reference["x"].astype(np.float64), conditional_input=c),
      self.reference["log_prob"],
      rtol=1e-5,
    )


if __name__ == "__main__":
  tf.test.main()

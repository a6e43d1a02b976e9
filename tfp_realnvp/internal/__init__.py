"""Helpers shared across the package: argument and shape checks, the contexts of conditional flows, bits per
dimension, moments, CPU features, quiet start-up.

Nothing here imports TensorFlow at package import time (`quiet_startup` must run before it)."""

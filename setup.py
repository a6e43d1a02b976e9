"""tfp_realnvp: RealNVP normalizing flows (Dinh et al., 2016) for TensorFlow Probability."""

import setuptools

setuptools.setup(
  name="tfp_realnvp",
  version="0.1.0",
  description="RealNVP normalizing flows as TensorFlow Probability bijectors and distributions.",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  python_requires=">=3.11,<3.12",
  packages=setuptools.find_packages(include=["tfp_realnvp", "tfp_realnvp.*"]),
  install_requires=[
    "tensorflow==2.21.*",
    "tensorflow-probability==0.25.*",
    "tf-keras==2.21.*",
    "tensorflow-datasets>=4.9.10,<4.10",
    "importlib_resources",  # tfds 4.9.10 imports it at builder load time
    "absl-py",
    "numpy",
    "pillow",  # image decoding in tfds and PNG output
    "scikit-learn",  # ships the bundled 8x8 digits and two moons
    "matplotlib",
    "tensorboard==2.21.*",  # the Keras TensorBoard callback (FlowModel.fit) needs it
  ],
  extras_require={
    # The gRPC client test builds real PredictRequests, so the tests need the serving API too.
    "test": ["pytest", "pytest-xdist", "ruff", "tensorflow-serving-api==2.21.*"],
    "serving": ["tensorflow-serving-api==2.21.*"],
  },
  classifiers=[
    "Programming Language :: Python :: 3.11",
    "License :: OSI Approved :: Apache Software License",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
  ],
)

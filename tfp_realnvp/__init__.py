"""RealNVP normalizing flows (Dinh, Sohl-Dickstein and Bengio, 2016) for TensorFlow Probability."""

"""RealNVP's bijectors, each a `tfp.bijectors.Bijector` with an exact inverse and log-det."""

from tfp_realnvp.bijectors.batch_norm import BatchNorm
from tfp_realnvp.bijectors.context_shift import ContextShift
from tfp_realnvp.bijectors.coupling import AffineCoupling
from tfp_realnvp.bijectors.factor_out import FactorOut
from tfp_realnvp.bijectors.keyword_chain import KeywordChain, call_keywords_of
from tfp_realnvp.bijectors.logit_transform import LogitTransform
from tfp_realnvp.bijectors.masks import make_mask
from tfp_realnvp.bijectors.multi_scale import MultiScale
from tfp_realnvp.bijectors.squeeze import Squeeze

__all__ = [
  "AffineCoupling",
  "BatchNorm",
  "ContextShift",
  "FactorOut",
  "KeywordChain",
  "LogitTransform",
  "MultiScale",
  "Squeeze",
  "call_keywords_of",
  "make_mask",
]

"""Times the peer, chrischute/real-nvp (PyTorch), in one process and prints one JSON line (run by
`bench_reference.py` in the interpreter that has torch; needs no TensorFlow).

  python bench/reference_worker.py --reference_dir=PATH --mode=autocast_bf16 --num_scales=2 --num_blocks=4 \
      --mid_channels=32 --image_shape=32,32,3

The peer's model, loss and helpers are imported from `--reference_dir` (a checkout of the public repository)
and used as its `train.py` uses them: `RealNVP(num_scales, in_channels, mid_channels, num_blocks)`,
`RealNVPLoss()` (k=256), Adam at 1e-3 over `util.get_param_groups(net, 5e-5, norm_suffix="weight_g")` (its L2
on the weight-norm scales) and `util.clip_grad_norm(optimizer, 100.)`. Modes: `fp32`, and `autocast_bf16`
(forward and loss under `torch.autocast("cpu", dtype=torch.bfloat16)`, backward outside it, as PyTorch
recommends). FLOPs are `2 x multiply-adds` of its `nn.Conv2d` modules, counted by forward hooks on one call of
each phase; a train step counts 3x its forward (the forward, input-gradient and kernel-gradient convolutions:
every convolution follows a batch norm with parameters, so every input gradient is computed).
"""

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

import torch
from phase_timing import time_phases

MODES = ("fp32", "autocast_bf16")
PHASES = ("train", "log_prob", "sample")


def _import_peer(reference_dir):
  """The peer's `RealNVP`, `RealNVPLoss` and `util` from `reference_dir`, which is left untouched on disk."""
  sys.path.insert(0, os.path.abspath(reference_dir))
  sys.dont_write_bytecode = True  # no __pycache__ in the user's checkout
  warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated, still works
  import models.real_nvp.real_nvp as real_nvp_module
  import util
  from models import RealNVP, RealNVPLoss

  # The one in-memory patch, unavoidable: the peer was written for torch 0.4.1, where every tensor a
  # convolution returned was contiguous. Since torch 1.5 convolutions keep their input's memory format, so
  # after `squeeze_2x2` (which returns a permuted, channels-last-strided tensor) the channel-wise couplings'
  # `s.view(s.size(0), -1)` raises "view size is not compatible with input tensor's size and stride", in
  # every mode. Making the squeeze's output contiguous restores the layout torch 0.4.1 gave it.
  squeeze_2x2 = real_nvp_module.squeeze_2x2
  real_nvp_module.squeeze_2x2 = lambda *args, **kwargs: squeeze_2x2(*args, **kwargs).contiguous()
  return RealNVP, RealNVPLoss, util


@contextlib.contextmanager
def _count_conv_flops(net, counter):
  """Adds `2 x multiply-adds` of every `nn.Conv2d` call of `net` to `counter[0]` while active."""

  def hook(conv, inputs, output):
    counter[0] += (
      2 * output.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    )

  handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
  try:
    yield
  finally:
    for handle in handles:
      handle.remove()


def _phases(args, net, loss_fn, optimizer, util):
  """Each phase as a function of no arguments that returns once its work is done."""
  height, width, channels = args.image_shape
  generator = torch.Generator().manual_seed(7)
  # A fixed batch of 8-bit images, scaled to [0, 1] as the peer's `ToTensor()` input is.
  images = torch.randint(0, 256, (args.batch_size, channels, height, width), generator=generator) / 255.0
  latents = torch.randn((args.batch_size, channels, height, width), generator=generator)

  def precision():
    if args.mode == "autocast_bf16":
      return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()

  def train():
    net.train()
    optimizer.zero_grad()
    with precision():
      z, sldj = net(images, reverse=False)
      loss = loss_fn(z, sldj)
    loss.backward()
    util.clip_grad_norm(optimizer, 100.0)
    optimizer.step()
    return loss.item()

  def log_prob():
    net.eval()
    with torch.no_grad(), precision():
      z, sldj = net(images, reverse=False)
      return loss_fn(z, sldj).item()

  def sample():
    # The peer's `train.sample`: a standard normal through the inverse, then its sigmoid.
    net.eval()
    with torch.no_grad(), precision():
      x, _ = net(latents, reverse=True)
      return torch.sigmoid(x).float().mean().item()

  return dict(train=train, log_prob=log_prob, sample=sample)


def build_peer(peer, in_channels, num_scales, mid_channels, num_blocks, learning_rate):
  """`(net, loss_fn, optimizer)` as the peer's `train.py` builds them, from `peer`, the `(RealNVP, RealNVPLoss,
  util)` of `_import_peer`: Adam at `learning_rate` over `util.get_param_groups(net, 5e-5, ...)`."""
  RealNVP, RealNVPLoss, util = peer
  net = RealNVP(
    num_scales=num_scales, in_channels=in_channels, mid_channels=mid_channels, num_blocks=num_blocks
  )
  optimizer = torch.optim.Adam(util.get_param_groups(net, 5e-5, norm_suffix="weight_g"), lr=learning_rate)
  return net, RealNVPLoss(), optimizer


def run(args):
  """Builds the peer, times every phase and returns the JSON-able result."""
  load_average = os.getloadavg()[0]
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  peer = _import_peer(args.reference_dir)
  util = peer[2]
  start = time.perf_counter()
  net, loss_fn, optimizer = build_peer(
    peer, args.image_shape[2], args.num_scales, args.mid_channels, args.num_blocks, learning_rate=1e-3
  )
  build_s = time.perf_counter() - start
  result = dict(
    implementation="peer",
    mode=args.mode,
    batch_size=args.batch_size,
    threads=args.threads,
    num_parameters=sum(p.numel() for p in net.parameters()),
    load_average=round(load_average, 2),
    build_s=round(build_s, 2),
  )
  every_phase = _phases(args, net, loss_fn, optimizer, util)
  phases = {phase: every_phase[phase] for phase in args.phases}

  def count_flops(phase):
    counter = [0]
    with _count_conv_flops(net, counter):
      phases[phase]()
    # A train step's convolutions: forward, input gradient and kernel gradient, each as costly as the forward.
    return counter[0] * (3 if phase == "train" else 1)

  result.update(time_phases(phases, count_flops, args.batch_size, args.warmup_runs, args.timed_runs))
  result["torch"] = torch.__version__
  return result


def _parser():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference_dir", required=True, help="A checkout of chrischute/real-nvp.")
  parser.add_argument("--mode", choices=MODES, default="fp32")
  parser.add_argument("--num_scales", type=int, required=True)
  parser.add_argument("--num_blocks", type=int, required=True)
  parser.add_argument("--mid_channels", type=int, required=True, help="Features of the first scale.")
  parser.add_argument(
    "--image_shape",
    type=lambda text: tuple(int(n) for n in text.split(",")),
    required=True,
    help="height,width,channels",
  )
  parser.add_argument("--phases", type=lambda text: text.split(","), default=list(PHASES))
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--threads", type=int, default=2, help="`torch.set_num_threads`.")
  parser.add_argument("--warmup_runs", type=int, default=2)
  parser.add_argument("--timed_runs", type=int, default=5)
  return parser


if __name__ == "__main__":
  arguments = _parser().parse_args()
  unknown = [p for p in arguments.phases if p not in PHASES]
  if unknown:
    sys.exit(f"error: --phases has {unknown}; expected some of {list(PHASES)}")
  print(json.dumps(run(arguments)), flush=True)

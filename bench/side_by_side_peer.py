"""The peer's side of `side_by_side.py`: trains chrischute/real-nvp (PyTorch) on the images `side_by_side.py`
gives it for a training-time budget, with a validation curve, then scores the test images; prints one JSON line.
Runs in the interpreter that has torch, needs no TensorFlow.

  python bench/side_by_side_peer.py --reference_dir=PATH --data=images.npz --budget_s=1800 --eval_every_s=120 \
      --curve=peer.jsonl --mode=autocast_bf16 --num_scales=2 --num_blocks=4 --mid_channels=32

The peer's model, loss and helpers are imported from `--reference_dir` (a checkout, untouched on disk, patched
in memory only as `reference_worker.py` does, for torch 2.x) and trained as its `train.py` trains: `RealNVP(
num_scales, in_channels, mid_channels, num_blocks)`, `RealNVPLoss()` (k=256), Adam at `--learning_rate` over
`util.get_param_groups(net, 5e-5, norm_suffix="weight_g")` (its L2, as Adam's weight decay on the weight-norm
scales), `util.clip_grad_norm(optimizer, 100.)`, shuffled batches of `--batch_size` dropping the last partial
one, `net.train()`. Its input is its `ToTensor()` preprocessing: 8-bit pixels `/ 255`, `[N, 1, 28, 28]`; its
`RandomHorizontalFlip` is a CIFAR-10 augmentation that ours does not apply to Fashion-MNIST, so neither side
flips. Modes: `fp32`, or `autocast_bf16` (forward and loss under `torch.autocast("cpu", torch.bfloat16)`).

Scores are its `RealNVPLoss` per image over `D ln 2` under `net.eval()` and `torch.no_grad()` in the same mode:
`-log2 p(v + u) / D` for the 8-bit levels `v` and uniform noise `u` (its `_pre_process` draws it), the density on
the 8-bit scale (its loss subtracts `D log 256`, and its log-det includes the logit preprocessing's): the uniform
dequantization bound at K = 1. The noise of every evaluation is drawn from a fixed seed (the training random
state is put back after), so each validation point scores the same noisy images.
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import side_by_side_protocol as protocol

MODES = ("fp32", "autocast_bf16")
CHECK_SEED = 5


def _import_peer(reference_dir):
  """`RealNVP`, `RealNVPLoss` and `util` of the checkout, as `reference_worker.py` imports them (one patch in
  memory: `squeeze_2x2`'s output contiguous, as torch 0.4.1 gave it)."""
  import reference_worker

  return reference_worker._import_peer(reference_dir)


def _precision(torch, mode):
  if mode == "autocast_bf16":
    return torch.autocast("cpu", dtype=torch.bfloat16)
  return contextlib.nullcontext()


def _as_peer_input(torch, images):
  """uint8 `[N, H, W, C]` to the peer's `ToTensor()` input: float32 `[N, C, H, W]` in [0, 1]."""
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255.0


def bits_per_dim(torch, net, loss_fn, images, mode, batch_size=500, seed=CHECK_SEED):
  """Mean bits/dim of `images` (the peer's input), in inference mode, noise from `seed`; the training random
  state comes back afterwards."""
  state = torch.get_rng_state()
  torch.manual_seed(seed)
  net.eval()
  total = 0.0
  try:
    with torch.no_grad(), _precision(torch, mode):
      for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        z, sldj = net(x, reverse=False)
        total += float(loss_fn(z.float(), sldj.float())) * x.shape[0]
  finally:
    torch.set_rng_state(state)
    net.train()
  dims = int(np.prod(images.shape[1:]))
  return total / images.shape[0] / (dims * np.log(2.0))


def definition_check(torch, net, loss_fn, levels, noise):
  """Bits/dim per image of the peer's model with every coupling an identity (its logit preprocessing and
  prior only), on `levels + noise` with that exact noise: comparable with `protocol.analytic_bits_per_dim`."""

  class Identity(torch.nn.Module):
    def forward(self, x, sldj, reverse=False):
      return x, sldj

  flows = net.flows
  rand_like = torch.rand_like
  net.flows = Identity()
  torch.rand_like = lambda x: torch.from_numpy(noise.transpose(0, 3, 1, 2).astype(np.float32))
  try:
    net.eval()
    with torch.no_grad():
      z, sldj = net(_as_peer_input(torch, levels), reverse=False)
      per_image = [float(loss_fn(z[i : i + 1], sldj[i : i + 1])) for i in range(levels.shape[0])]
  finally:
    net.flows = flows
    torch.rand_like = rand_like
    net.train()
  dims = int(np.prod(levels.shape[1:]))
  return [value / (dims * np.log(2.0)) for value in per_image]


def run(args):
  load_average = os.getloadavg()[0]
  protocol.pin_to_cpu(args.cpu)
  import reference_worker
  import torch

  torch.set_num_threads(args.threads)
  if args.cpu is not None:
    torch.set_num_interop_threads(1)
  torch.manual_seed(args.seed)
  peer = _import_peer(args.reference_dir)
  util = peer[2]
  arrays = np.load(args.data)
  train, valid = _as_peer_input(torch, arrays["train"]), _as_peer_input(torch, arrays["valid"])
  net, loss_fn, optimizer = reference_worker.build_peer(
    peer, train.shape[1], args.num_scales, args.mid_channels, args.num_blocks, args.learning_rate
  )
  result = dict(
    side="peer",
    mode=args.mode,
    batch_size=args.batch_size,
    threads=args.threads,
    cpu=args.cpu,
    num_parameters=sum(p.numel() for p in net.parameters()),
    architecture=dict(num_scales=args.num_scales, num_blocks=args.num_blocks, mid_channels=args.mid_channels),
    images=dict(
      train=protocol.images_digest(arrays["train"]),
      valid=protocol.images_digest(arrays["valid"]),
      test=protocol.images_digest(arrays["test"]),
    ),
    load_average=round(load_average, 2),
    torch=torch.__version__,
  )
  if "check_levels" in arrays:
    result["definition_check"] = definition_check(
      torch, net, loss_fn, arrays["check_levels"], arrays["check_noise"]
    )
  clock = protocol.TrainClock(args.budget_s, args.eval_every_s)
  generator = torch.Generator().manual_seed(args.seed)
  order, position, eval_s, loads = torch.randperm(train.shape[0], generator=generator), 0, 0.0, []
  net.train()
  while not clock.done():
    with clock.step():
      if position + args.batch_size > train.shape[0]:
        order, position = torch.randperm(train.shape[0], generator=generator), 0
      x = train[order[position : position + args.batch_size]]
      position += args.batch_size
      optimizer.zero_grad()
      with _precision(torch, args.mode):
        z, sldj = net(x, reverse=False)
        loss = loss_fn(z, sldj)
      loss.backward()
      util.clip_grad_norm(optimizer, 100.0)
      optimizer.step()
      loss = loss.item()
    if not np.isfinite(loss):
      result["error"] = f"non-finite training loss at step {clock.steps}"
      break
    if clock.evaluation_due():
      start = time.perf_counter()
      valid_bits_per_dim = bits_per_dim(torch, net, loss_fn, valid, args.mode)
      eval_time = time.perf_counter() - start
      eval_s += eval_time
      loads.append(os.getloadavg()[0])
      train_bits_per_dim = loss / (int(np.prod(train.shape[1:])) * np.log(2.0))
      point = clock.point("peer", args.batch_size, valid_bits_per_dim, train_bits_per_dim, eval_time)
      protocol.append_point(args.curve, point)
  result.update(clock.figures(args.batch_size))
  result["eval_s"] = round(eval_s, 2)
  result["load_average_max"] = round(max(loads, default=load_average), 2)
  start = time.perf_counter()
  test = _as_peer_input(torch, arrays["test"])
  result["test"] = dict(
    uniform_k1=dict(
      bits_per_dim=round(bits_per_dim(torch, net, loss_fn, test, args.mode), 5), images=int(test.shape[0])
    )
  )
  result["test_eval_s"] = round(time.perf_counter() - start, 2)
  return result


def parser():
  """The worker's flags: `side_by_side_protocol`'s common ones and the peer's own."""
  argument_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  protocol.add_common_arguments(argument_parser)
  argument_parser.add_argument("--reference_dir", required=True, help="A checkout of chrischute/real-nvp.")
  argument_parser.add_argument(
    "--data", required=True, help="An .npz of uint8 [N, H, W, C] arrays: train, valid, test (and check_*)."
  )
  argument_parser.add_argument("--num_scales", type=int, required=True)
  argument_parser.add_argument("--num_blocks", type=int, required=True)
  argument_parser.add_argument("--mid_channels", type=int, required=True, help="Features of the first scale.")
  return argument_parser


def main(argv):
  protocol.worker_main(argv, parser(), run, MODES)


if __name__ == "__main__":
  main(sys.argv[1:])

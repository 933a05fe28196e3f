"""CPU speed of the score networks against the reference implementation's figures.

Cases (reference figures from the project's calibration measurements, taken on this kind of 2-core CPU
when idle, with the original score_sde_pytorch code or the calibration prototype):

* ddpmpp_cifar10 forward, batch 8, 3x32x32 (DDPM++ cont., 61.8 M parameters): 625 ms on 2 threads,
  1150 ms on 1.
* ncsnpp_cifar10 forward, batch 8, 3x32x32 (NCSN++ cont., VE): 753 ms on 2 threads.
* unet (conf/model/unet.yaml) forward, batch 128, 1x8x8: no reference figure (shown for scale).
* unet training step (forward, backward, Adam), batch 128: the calibration prototype (0.5 M
  parameters) ran ~2,200 images/s on 2 threads, ~1,260 on 1 (58 ms / 102 ms per step).

Ratio = our median time / reference time (<= 1.0 means no slower). Variants: eager NCHW,
channels_last (`net.to(memory_format=torch.channels_last)`, NCHW input), and torch.compile
(--compile; compiling takes minutes on 2 cores).
A 2-thread run collapses when another process holds a core, so the load average is printed before
and after; compare CPU time too.

    python benchmarks/bench_nets.py [--threads 2] [--reps 5] [--cases ddpmpp_cifar10,unet] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]

# case -> (preset, batch shape, label kind, training?, {threads: reference ms})
CASES: dict[str, tuple[str, tuple[int, ...], str, bool, dict[int, float]]] = {
    "unet": ("unet", (128, 1, 8, 8), "time", False, {}),
    "unet_train": ("unet", (128, 1, 8, 8), "time", True, {2: 128 / 2200 * 1e3, 1: 128 / 1260 * 1e3}),
    "ddpmpp_cifar10": ("ddpmpp_cifar10", (8, 3, 32, 32), "time", False, {2: 625.0, 1: 1150.0}),
    "ncsnpp_cifar10": ("ncsnpp_cifar10", (8, 3, 32, 32), "sigma", False, {2: 753.0}),
}


def _labels(kind: str, n: int) -> torch.Tensor:
    return 999 * torch.rand(n) if kind == "time" else 0.01 * 5000 ** torch.rand(n)


def _step_fn(net: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, train: bool) -> Callable[[], None]:
    """A closure running one forward (no grad, eval mode) or one eps-matching training step."""
    if not train:
        net.eval()

        def forward() -> None:
            with torch.no_grad():
                net(x, c)

        return forward
    net.train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        z = torch.randn_like(x)
        loss = (net(x + z, c) - z).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(fn: Callable[[], None], reps: int, warmup: int = 2) -> tuple[float, float, float]:
    """Median and minimum wall time and median process CPU time of `fn`, in ms."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, p0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - p0)
    return statistics.median(wall) * 1e3, min(wall) * 1e3, statistics.median(cpu) * 1e3


def _variants(net: torch.nn.Module, x: torch.Tensor, use_compile: bool):
    yield "eager", net, x
    # Converting the weights is enough: convolutions then run (and return) channels_last for NCHW input.
    yield "channels_last", copy.deepcopy(net).to(memory_format=torch.channels_last), x
    if use_compile:
        yield "compile", torch.compile(copy.deepcopy(net)), x


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cases", default="unet,unet_train,ddpmpp_cifar10")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} CPUs, "
          f"load average before: {_loadavg()}")
    header = (f"{'case':16s} {'variant':14s} {'thr':>3s} {'median ms':>10s} {'min ms':>9s} {'cpu ms':>9s} "
              f"{'ref ms':>8s} {'ratio':>6s}")
    print(header)
    print("-" * len(header))
    for case in args.cases.split(","):
        preset, shape, kind, train, ref = CASES[case]
        net = instantiate(OmegaConf.load(ROOT / "conf" / "model" / f"{preset}.yaml"))
        x, c = torch.randn(shape), _labels(kind, shape[0])
        for variant, v_net, v_x in _variants(net, x, args.compile):
            t_c = time.perf_counter()
            fn = _step_fn(v_net, v_x, c, train)
            med, best, cpu = _time(fn, args.reps, warmup=2)
            ref_ms = ref.get(args.threads)
            ratio = f"{med / ref_ms:6.2f}" if ref_ms else "     -"
            ref_s = f"{ref_ms:8.0f}" if ref_ms else "       -"
            extra = f"  (incl. compile: {time.perf_counter() - t_c:.0f} s)" if variant == "compile" else ""
            print(f"{case:16s} {variant:14s} {args.threads:3d} {med:10.1f} {best:9.1f} {cpu:9.1f} "
                  f"{ref_s} {ratio}{extra}", flush=True)
    print(f"load average after: {_loadavg()}")


if __name__ == "__main__":
    main()

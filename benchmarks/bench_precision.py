"""Matrix products in float32 and bf16 on this machine's CPU, at the paper's decoder width, in the three
layouts a Linear layer's training step runs: forward (x @ W^T), the input gradient (g @ W) and the
weight gradient (g^T @ x). Prints GFLOP/s per layout and dtype and bf16's slowdown, with the CPU
capability torch dispatches to; on a CPU without native bf16 (no AVX512-BF16 or AMX) torch's bf16
products fall back to slower kernels, which is why the paper-shape test runs float32 on the CPU
(tests/workflow/test_paper_smoke.py).

    .venv/bin/python benchmarks/bench_precision.py --tokens 1024 --width 1536 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch


def gflops(fn, flops: float, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="rows of the activations")
    parser.add_argument("--width", type=int, default=1536, help="SD3.5-Medium's MMDiT-X width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{args.threads} thread(s), {args.tokens} x {args.width} @ {args.width} x {args.width}"
    )
    flops = 2.0 * args.tokens * args.width * args.width
    gen = torch.Generator().manual_seed(0)
    x32 = torch.randn(args.tokens, args.width, generator=gen)
    w32 = torch.randn(args.width, args.width, generator=gen)
    print("| layout | float32 GFLOP/s | bf16 GFLOP/s | bf16 slowdown |")
    print("|---|---:|---:|---:|")
    for name, op in (
        ("forward x @ W^T", lambda x, w: x @ w.t()),
        ("input grad g @ W", lambda x, w: x @ w),
        ("weight grad g^T @ x", lambda x, w: x.t() @ x),
    ):
        rates = []
        for dtype in (torch.float32, torch.bfloat16):
            x, w = x32.to(dtype), w32.to(dtype)
            rates.append(gflops(lambda: op(x, w), flops, args.repeats))
        print(f"| {name} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[0] / rates[1]:.0f}x |")


if __name__ == "__main__":
    main()

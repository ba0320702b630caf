"""Baselines for bench_quant_cuda, measured on the same GPU in the same run: a device-to-device
copy and fp16 matmuls through torch (cuBLAS) for every shape the kernel benchmark compares
against. Writes a flat JSON {name: number} that bench_quant_cuda --baselines reads.

Timing: CUDA events around batches of calls after a warm-up, median of the batches; inputs
random; weights rotated among enough copies that the working set exceeds L2.

Usage: python3 bench/kernels/baselines.py OUT.json
"""
import json
import sys

import torch


def time_us(fn, per_batch=20, batches=11):
    for i in range(5):
        fn(i)
    torch.cuda.synchronize()
    times = []
    k = 0
    for _ in range(batches):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(per_batch):
            fn(k)
            k += 1
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / per_batch)
    times.sort()
    return times[len(times) // 2]


def copies_for(nbytes):
    return max(2, (256 << 20) // max(nbytes, 1) + 1)


def main():
    out_path = sys.argv[1]
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True
    res = {}
    n = 1 << 29  # 1 GiB of fp16
    src = torch.randn(n, device=dev, dtype=torch.float16)
    dst = torch.empty_like(src)
    us = time_us(lambda i: dst.copy_(src), per_batch=5, batches=7)
    res["torch_copy_gbs"] = 2 * src.numel() * 2 / (us * 1e-6) / 1e9
    del src, dst

    shapes = []
    for N, K in ((8192, 8192), (28672, 8192), (4096, 4096)):
        shapes.append((1, N, K))
    for M in (16, 64, 256):
        for N, K in ((8192, 8192), (28672, 8192)):
            shapes.append((M, N, K))
    shapes.append((2048, 8192, 8192))
    for M, N, K in shapes:
        nc = copies_for(N * K * 2)
        ws = [torch.randn(N, K, device=dev, dtype=torch.float16) * 0.02 for _ in range(nc)]
        x = torch.randn(M, K, device=dev, dtype=torch.float16)
        us = time_us(lambda i: torch.matmul(x, ws[i % nc].t()))
        res[f"fp16_mm_{M}x{N}x{K}_us"] = us
        print(f"fp16 matmul M={M} N={N} K={K}: {us:.1f} us  ({2 * M * N * K / (us * 1e-6) / 1e12:.1f} TFLOP/s, "
              f"{N * K * 2 / (us * 1e-6) / 1e9:.0f} GB/s weight)", flush=True)
        del ws
        torch.cuda.empty_cache()
    print(f"torch copy: {res['torch_copy_gbs']:.0f} GB/s (read+write)")
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

"""What idle time costs torch operations and a click on this machine, and why.

A click is timed after 0.1 s of idle time (``anyseg bench``). Two parts, each with 1 and with
2 threads, each in a fresh process:

- ``ops``: two operations apart from any model (a 256-element ``exp`` and a 4096 x 256 x 256
  matrix product), each timed right after ``--pause`` seconds of sleep and back to back. On a
  virtual machine the idle vCPUs are halted and handed back to the host; waking torch's second
  OpenMP thread then takes as long as the host needs to run that vCPU again, or, where the
  guest queues the woken thread behind the one that woke it (which spins waiting for it),
  until its scheduler moves one of them. Then again within ``kernels.bound_threads`` (after
  the first two: its placement stays), where it places the threads (``placed_after_idle_ms``).
- ``click``: a bf16 click of SAM 2.1-tiny (random fixture-format weights, the bench's image
  and clicks; its threads placed as the image predictor places them) back to back, after the pause, and back to back after reading ``--evict-mb`` MB
  (which evicts the caches, the click's code and data, without any idle time), and after
  both. Where evicting alone costs about what the pause does, the idle penalty is the caches
  the host's other work empties while this machine sleeps.

    python benchmarks/idle_wake.py            # -> results/idle_wake.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import write_results


def child(threads: int, pause: float, repeat: int) -> dict:
    import torch

    from anyseg import kernels

    torch.set_num_threads(threads)
    small, a, b = torch.randn(1, 2, 128), torch.randn(4096, 256), torch.randn(256, 256)
    ops = {"exp_256": lambda: small.exp(), "matmul_4096x256x256": lambda: a @ b}
    out = {}
    for name, op in ops.items():
        for _ in range(5):
            op()
        for label, wait in (("after_idle_ms", pause), ("back_to_back_ms", 0.0)):
            times = []
            for _ in range(repeat):
                time.sleep(wait)
                t = time.perf_counter()
                op()
                times.append(1000 * (time.perf_counter() - t))
            out.setdefault(name, {})[label] = round(statistics.median(times), 3)
    if kernels.placement_env(threads):  # where bound_threads places threads; from here on they stay placed
        for name, op in ops.items():
            times = []
            for _ in range(repeat):
                time.sleep(pause)
                with kernels.bound_threads():
                    t = time.perf_counter()
                    op()
                    times.append(1000 * (time.perf_counter() - t))
            out[name]["placed_after_idle_ms"] = round(statistics.median(times), 3)
    return out


def click_child(threads: int, pause: float, repeat: int, evict_mb: int) -> dict:
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from anyseg import ImagePredictor, bench

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        net = bench.load_model("sam2.1_hiera_t", str(bench.random_weights("sam2.1_hiera_t", Path(tmp) / "w.pt")))
    image = bench.load_image(str(bench.DEFAULT_IMAGE))
    pred = ImagePredictor(net, precision="bf16")
    pred.set_image(image)
    clicks = bench.click_points(image.shape[:2])
    junk = np.ones(evict_mb * 2**20 // 8)
    out = {}
    for label, wait, evict in (("back_to_back_ms", 0.0, False), ("after_idle_ms", pause, False),
                               ("after_eviction_ms", 0.0, True), ("after_eviction_and_idle_ms", pause, True)):
        times = []
        for i in range(repeat + 3):
            if evict:
                junk.sum()  # reads every line of the buffer
            time.sleep(wait)
            t = time.perf_counter()
            pred.predict(points=[clicks[i % len(clicks)]], labels=[1], multimask=True)
            times.append(1000 * (time.perf_counter() - t))
        out[label] = round(statistics.median(times[3:]), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause", type=float, default=0.1, help="idle seconds before each timed call")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--evict-mb", type=int, default=512, help="MB read to evict the caches before a click")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("ops", "click"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (child(args.child, args.pause, args.repeat) if args.part == "ops"
                  else click_child(args.child, args.pause, args.repeat, args.evict_mb))
        print(json.dumps(result))
        return
    rows = {}
    for part in ("ops", "click"):
        for threads in (1, 2):
            cmd = [sys.executable, __file__, "--child", str(threads), "--part", part, "--pause", str(args.pause),
                   "--repeat", str(args.repeat), "--evict-mb", str(args.evict_mb)]
            run = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.setdefault(part, {})[f"{threads}_threads"] = json.loads(run.stdout)
    path = write_results("idle_wake", {"pause_s": args.pause, "repeat": args.repeat, "evict_mb": args.evict_mb,
                                       "medians": rows})
    print(json.dumps(rows, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()

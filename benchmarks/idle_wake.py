"""What idle time costs the next torch operation on this machine, apart from any model.

A click is timed after 0.1 s of idle time (``anyseg bench``). On a virtual machine the idle
vCPUs are halted and handed back to the host; waking torch's second OpenMP thread then takes
as long as the host needs to run that vCPU again. This script measures it: two operations
(a 256-element ``exp``, which torch runs on its thread team, and a 4096 x 256 x 256 matrix
product) each timed right after ``--pause`` seconds of sleep and back to back, with 1 and
with 2 threads, each in a fresh process.

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
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause", type=float, default=0.1, help="idle seconds before each timed call")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pause, args.repeat)))
        return
    rows = {}
    for threads in (1, 2):
        cmd = [sys.executable, __file__, "--child", str(threads),
               "--pause", str(args.pause), "--repeat", str(args.repeat)]
        rows[f"{threads}_threads"] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    path = write_results("idle_wake", {"pause_s": args.pause, "repeat": args.repeat, "medians": rows})
    print(json.dumps(rows, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()

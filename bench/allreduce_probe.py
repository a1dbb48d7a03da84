"""Time gloo all-reduces on this machine (run by ``bench_scale.py`` under torchrun).

``python -m torch.distributed.run --standalone --nproc-per-node 2 bench/allreduce_probe.py
int64:N int32:M ...`` all-reduces (SUM) a tensor of each dtype and element count, 10 warm-up
and ``REPEATS`` timed times, one thread per rank like the trainer, and rank 0 prints one JSON
list: ``[{"dtype", "elements", "bytes", "seconds"}, ...]`` (mean seconds per all-reduce).
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.distributed as dist

REPEATS = 100


def main(specs: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out = []
    for spec in specs:
        name, n = spec.split(":")
        t = torch.zeros(int(n), dtype=getattr(torch, name))
        for _ in range(10):
            dist.all_reduce(t)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(REPEATS):
            dist.all_reduce(t)
        s = (time.perf_counter() - t0) / REPEATS
        out.append({"dtype": name, "elements": int(n), "bytes": t.numel() * t.element_size(),
                    "seconds": s})
    if dist.get_rank() == 0:
        print(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

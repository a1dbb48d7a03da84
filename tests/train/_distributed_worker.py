"""A torchrun worker for tests/train/test_distributed.py: ``bitswarm`` with a fault injected.

``FAULT`` (test-only, read here and nowhere in the package) selects the fault:

- ``crash:RANK:STEP``: rank ``RANK`` dies (``os._exit(3)``, no cleanup) at its ``STEP``-th
  training step (1-based, counted over the run);
- ``write:EPOCH``: rank 0 fails to write the checkpoint of epoch ``EPOCH`` (PermissionError);
- ``noshard``: a mutation, every rank takes the whole minibatch (so every sum counts it W
  times); the byte-identity check must catch it.
"""

import os
import sys

from bitswarm.cli import main

fault = os.environ.get("FAULT", "")
rank = int(os.environ.get("RANK", "0"))
if fault.startswith("crash:"):
    _, who, at = fault.split(":")
    if rank == int(who):
        from bitswarm.train.rule_golden import GoldenRule

        step, calls = GoldenRule.train_step, [0]

        def _train_step(self, x, y):
            calls[0] += 1
            if calls[0] == int(at):
                os._exit(3)
            return step(self, x, y)

        GoldenRule.train_step = _train_step
elif fault.startswith("write:") and rank == 0:
    import bitswarm.train.trainer as trainer

    save, epoch = trainer.save_checkpoint, int(fault.split(":")[1])

    def _save_checkpoint(path, ck):
        if ck.epoch == epoch:
            raise PermissionError(13, "Permission denied", str(path))
        return save(path, ck)

    trainer.save_checkpoint = _save_checkpoint

elif fault == "noshard":
    from bitswarm.train.distributed import Comm

    Comm.shard = lambda self, n: slice(0, n)

raise SystemExit(main(sys.argv[1:]))

"""Data-parallel training on ``torch.distributed`` (``bitswarm.train.distributed``).

``torchrun --standalone --nproc-per-node N -m bitswarm train ...`` (or ``bitswarm train
--nproc N``, which launches exactly that through :mod:`torch.distributed.run`) trains one run
on ``N`` processes. The result is **byte-identical** to one process with the same seed and
global batch size, because

- every rank loads the whole data set and walks the same global order
  (:func:`~bitswarm.train.trainer.epoch_order`); of each global minibatch of ``B`` samples,
  rank ``r`` of ``W`` takes the contiguous rows :meth:`Comm.shard` ``= [r*B//W, (r+1)*B//W)``;
- everything a step sums over the batch (integer weight gradients, the window's variance sums,
  homeostasis sums, the output scores) is an **int64** tensor, summed over ranks with
  ``all_reduce(SUM)``. Integer addition is associative, so the sum does not depend on the
  sharding or the reduction order, and every rank holds the single-process value;
- every rank then applies the identical flip step (same votes, same LFSR), so all ranks hold
  the same state after every step; rank 0 alone writes ``config.json``, ``metrics.jsonl``,
  ``last.ckpt``, plots and the model file (atomically, as in one process).

Backends: ``gloo`` on CPU, ``nccl`` with ``--device cuda`` (each rank on ``cuda:LOCAL_RANK``).
The world comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); without it, or with ``WORLD_SIZE=1``, training is the plain
single-process loop and no process group is created.

Failures: a collective that fails (a peer died or closed its connection) raises
:class:`DistributedError` on the surviving ranks, naming the last checkpoint, which rank 0
wrote atomically and is therefore intact; torchrun also stops the remaining workers when one
exits with an error. A peer that hangs is given up on after ``BITSWARM_DIST_TIMEOUT`` seconds
(default 300), the process-group timeout. Writes by rank 0 are followed by an integer
"ok" vote (:meth:`Comm.writes`), so a failed checkpoint write stops every rank with one line.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from bitswarm.golden.errors import BitswarmError, ConfigError

__all__ = [
    "BACKENDS",
    "TIMEOUT_ENV",
    "Comm",
    "DistributedError",
    "LOCAL",
    "env_world_size",
    "init",
    "launch",
    "ring_allreduce_bytes",
]

#: Process-group backend per device type.
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
#: Environment variable: seconds a rank waits for its peers in one collective (default 300).
TIMEOUT_ENV = "BITSWARM_DIST_TIMEOUT"
_DEFAULT_TIMEOUT_S = 300


class DistributedError(BitswarmError):
    """A distributed run failed: a peer stopped, a collective timed out, or rank 0 failed to write."""


def _env_int(name: str, default: int | None = None) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, not {v!r}") from None


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (torchrun sets it), 1 when unset."""
    w = _env_int("WORLD_SIZE", 1)
    if w < 1:
        raise ConfigError(f"WORLD_SIZE must be >= 1, not {w}")
    return w


class Comm:
    """One rank's view of the process group; the single-process instance is :data:`LOCAL`.

    Parameters
    ----------
    rank, world_size : int
        This process's rank and the number of processes (``0 <= rank < world_size``).
    backend : str
        ``"none"`` (one process), ``"gloo"`` or ``"nccl"``.
    device : torch.device
        Where collectives run (CPU for gloo, the rank's GPU for nccl).

    Members
    -------
    checkpoint_note : str
        What the trainer last saved (named in :class:`DistributedError` messages).
    reduced_bytes, reductions : int
        Payload bytes and number of :meth:`all_reduce_sum` collectives so far (0 in one process).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, backend: str = "none",
                 device: torch.device | str = "cpu", owned: bool = False):
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int)
                and 0 <= rank < world_size):
            raise ConfigError(f"rank must be in 0..world_size-1, found rank {rank!r} of {world_size!r}")
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self.device = torch.device(device)
        self.owned = owned
        self.checkpoint_note = "no checkpoint written yet"
        self.reduced_bytes = 0
        self.reductions = 0

    def __repr__(self) -> str:
        return f"Comm(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this rank writes the run's files (rank 0)."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's rows of a global minibatch of ``n``: ``[r*n//W, (r+1)*n//W)``.

        Contiguous, in order, sizes differing by at most one; their concatenation over ranks is
        the whole minibatch (the trainer refuses ``n < W``: every rank gets at least one row).
        """
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``sum`` over ranks of an int64 (or int32) tensor, exact; ``t`` itself in one process.

        Only integers are reduced: integer addition is associative, so the result is the same
        for any number of ranks and any reduction order. The caller guarantees that the sum
        fits the dtype (int32: a bound below ``2**31``, as ``GoldenRule.grad_reduce_dtype``).
        """
        if t.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"all_reduce_sum takes int64 or int32 tensors (exact sums), not {t.dtype}")
        if not self.parallel:
            return t
        import torch.distributed as dist

        buf = t.to(self.device).contiguous()
        self.reduced_bytes += buf.numel() * buf.element_size()
        self.reductions += 1
        try:
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        except RuntimeError as e:  # DistBackendError and gloo/nccl errors derive from it
            raise self._lost(e) from None
        return buf.to(t.device)

    def all_reduce_sum_many(self, ts: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`all_reduce_sum` of several tensors of one integer dtype in one collective (packed flat);
        the tensors themselves in one process."""
        if not self.parallel:
            return list(ts)
        flat = self.all_reduce_sum(torch.cat([t.reshape(-1) for t in ts]))
        out, k = [], 0
        for t in ts:
            out.append(flat[k : k + t.numel()].view(t.shape))
            k += t.numel()
        return out

    def _lost(self, e: BaseException) -> DistributedError:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: a collective failed ({first}); another rank "
            f"has stopped or timed out (see its error); {self.checkpoint_note}")

    def agree(self, ok: bool, what: str) -> None:
        """Every rank votes ``ok``; raise :class:`DistributedError` on all if one voted no."""
        if not self.parallel:
            return
        bad = int(self.all_reduce_sum(torch.tensor([0 if ok else 1], dtype=torch.int64)))
        if bad and ok:
            raise DistributedError(f"rank {self.rank} of {self.world_size}: stopping, {bad} rank(s) "
                                   f"failed {what} (see rank 0's error); {self.checkpoint_note}")

    @contextmanager
    def writes(self, what: str) -> Iterator[bool]:
        """Run a rank-0 write: yields :attr:`is_writer`; afterwards all ranks agree it worked.

        An exception on the writer is re-raised there after telling the others, which then
        raise :class:`DistributedError`; in one process this is just ``yield True``.
        """
        try:
            yield self.is_writer
        except BaseException:
            if self.parallel:
                try:
                    self.agree(False, what)
                except DistributedError:
                    pass
            raise
        self.agree(True, what)

    def close(self) -> None:
        """Destroy the process group if :func:`init` created it."""
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owned = False


#: The single-process communicator: no process group, reductions are the identity.
LOCAL = Comm()


def init(device: torch.device) -> tuple[Comm, torch.device]:
    """The communicator for this process and the device it computes on.

    Without ``WORLD_SIZE > 1`` in the environment: ``(LOCAL, device)``. Otherwise joins (or
    reuses) the default process group: gloo on CPU, nccl on CUDA with the device
    ``cuda:LOCAL_RANK``; the group's timeout is ``BITSWARM_DIST_TIMEOUT`` seconds.

    Raises
    ------
    ConfigError
        Inconsistent environment, or a backend this torch build lacks.
    DistributedError
        The rendezvous failed or timed out.
    """
    world = env_world_size()
    if world == 1:
        return LOCAL, device
    import torch.distributed as dist

    rank = _env_int("RANK")
    if rank is None or not 0 <= rank < world:
        raise ConfigError(f"WORLD_SIZE={world} needs RANK in 0..{world - 1} (start the run with torchrun)")
    local = _env_int("LOCAL_RANK", 0)
    backend = BACKENDS[device.type]
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but torch sees {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif not dist.is_gloo_available():
        raise ConfigError("this torch build lacks the gloo backend needed for CPU ranks")
    owned = False
    if dist.is_initialized():
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise ConfigError("the existing process group does not match RANK/WORLD_SIZE")
        backend = str(dist.get_backend())
    else:
        timeout = _env_int(TIMEOUT_ENV, _DEFAULT_TIMEOUT_S)
        if timeout < 1:
            raise ConfigError(f"{TIMEOUT_ENV} must be >= 1 second, not {timeout}")
        try:
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DistributedError(f"rank {rank} of {world}: joining the process group failed ({first})") from None
        owned = True
    coll = device if backend == "nccl" else torch.device("cpu")
    return Comm(rank, world, backend, coll, owned), device


def ring_allreduce_bytes(payload: int, world_size: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of ``payload`` bytes:
    ``2 (W - 1) / W * payload`` (reduce-scatter, then all-gather)."""
    return 2 * (world_size - 1) / world_size * payload if world_size > 1 else 0.0


def launch(nproc: int, argv: list[str]) -> int:
    """``torch.distributed.run --standalone --nproc-per-node NPROC -m bitswarm ARGV`` in-process.

    Returns 0 when every rank succeeded; raises :class:`DistributedError` naming the ranks that
    failed otherwise (each printed its own error above).
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be an integer >= 1, not {nproc!r}")
    from torch.distributed import run as trun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = trun.get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--module", "bitswarm", *argv])
    try:
        trun.run(args)
    except ChildFailedError as e:
        failed = ", ".join(f"rank {r} (exit code {f.exitcode})" for r, f in sorted(e.failures.items()))
        raise DistributedError(f"the {nproc}-process run failed: {failed}; see the ranks' errors above") from None
    return 0

"""Tests of train/distributed.py: data-parallel training on 2 local gloo ranks is byte-identical
to one process (digits, mnist5k, a digits CNN), resumes across world sizes, stops cleanly when a rank fails;
``--nproc``; the on-chip rule refused; CUDA vs CPU bytes (skipped without CUDA)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bitswarm.cli import main
from bitswarm.train import load_checkpoint
from bitswarm.train.distributed import LOCAL, Comm, ring_allreduce_bytes

#: Flip quickly so that a short run changes weights, thresholds, accumulators (not a trivial match).
QUICK = ["--flip-threshold", "8", "--opt", "homeostasis_shift=3", "--quiet", "--no-plots"]
RUNS = {
    "digits": ["--dataset", "digits", "--epochs", "3"],  # 1437 samples: 11 steps of 128
    "mnist5k": ["--dataset", "mnist5k", "--epochs", "1", "--batch-size", "125"],  # shards 63 + 62
    # two hidden layers: the summed gradients need int64 (the two above reduce them as int32)
    "digits-deep": ["--dataset", "digits", "--arch", "64-256-256-10", "--epochs", "2"],
    # convolutions: per-channel sums over every output pixel, routing and folding per sample
    "digits-conv": ["--dataset", "digits", "--arch", "1x8x8-c8k3p1-mp2-c8k3s2p1-10", "--epochs", "1",
                    "--batch-size", "63"],
}
WORKER = str(Path(__file__).with_name("_distributed_worker.py"))
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


@pytest.fixture(autouse=True)
def _single_process_env(monkeypatch):
    for k in _DIST_ENV:
        monkeypatch.delenv(k, raising=False)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "AMARANTH_USE_YOSYS": "builtin", **extra}


def _torchrun(n: int, args: list[str], *, script: str | None = None, timeout: int = 240, **env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    cmd += [script] if script else ["-m", "bitswarm"]
    return subprocess.run([*cmd, "train", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))


def _one(args: list[str]) -> None:
    assert main(["train", *args]) == 0


def _config(model: Path) -> dict:
    return json.loads((model.with_name(model.stem + ".run") / "config.json").read_text())


# -- the communicator ---------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_covers_the_minibatch_in_order(world):
    for n in range(0, 24):
        parts = [list(range(n))[Comm(r, world).shard(n)] for r in range(world)]
        assert sum(parts, []) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_local_comm_is_the_identity():
    t = torch.arange(6, dtype=torch.int64).view(2, 3)
    assert LOCAL.all_reduce_sum(t) is t and not LOCAL.parallel and LOCAL.is_writer
    assert LOCAL.all_reduce_sum_many([t, t[0]])[1] is not None
    with LOCAL.writes("nothing") as writer:
        assert writer
    with pytest.raises(TypeError, match="int64"):
        LOCAL.all_reduce_sum(t.double())


def test_init_wrong_rank():
    with pytest.raises(Exception, match="rank must be in 0..world_size-1"):
        Comm(2, 2)


def test_ring_allreduce_bytes():
    assert ring_allreduce_bytes(1000, 1) == 0.0
    assert ring_allreduce_bytes(1000, 2) == 1000.0
    assert ring_allreduce_bytes(1000, 8) == 1750.0


# -- byte identity ------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(RUNS))
def test_two_ranks_write_the_same_model_bytes(tmp_path, dataset):
    one, two = tmp_path / "one.bsm", tmp_path / "two.bsm"
    _one([*RUNS[dataset], *QUICK, "--out", str(one)])
    r = _torchrun(2, [*RUNS[dataset], *QUICK, "--out", str(two)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()
    assert r.stdout.count("trained golden") == 1  # rank 0 reports
    c1, c2 = _config(one), _config(two)
    assert (c1["world_size"], c1["backend"]) == (1, "none")
    assert (c2["world_size"], c2["backend"]) == (2, "gloo")
    ck = load_checkpoint(two.with_name("two.run") / "last.ckpt")
    assert "world_size" not in ck.config  # the checkpoint is the same for every N
    assert sum(ck.metrics[-1]["flips"]) > 0  # the run really changed bits
    m1 = [json.loads(s) for s in (tmp_path / "one.run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_loss"] for m in ck.metrics] == [m["train_loss"] for m in m1]  # float loss too


def test_a_sharding_bug_is_caught(tmp_path):
    # mutation check: ranks that all take the whole minibatch double every sum; the run must
    # not pass for the single-process one (here the doubled sums even make a variance negative)
    one, two = tmp_path / "one.bsm", tmp_path / "two.bsm"
    _one([*RUNS["digits"], *QUICK, "--out", str(one)])
    r = _torchrun(2, [*RUNS["digits"], *QUICK, "--out", str(two)], script=WORKER, FAULT="noshard")
    assert r.returncode != 0 or two.read_bytes() != one.read_bytes()


def test_resume_with_another_world_size(tmp_path):
    ref = tmp_path / "ref.bsm"
    _one([*RUNS["digits"], *QUICK, "--out", str(ref)])
    # 2 ranks (the --nproc shorthand) for 2 epochs, then 1 process for the third
    a = tmp_path / "a.bsm"
    assert main(["train", "--nproc", "2", "--dataset", "digits", "--epochs", "2", *QUICK,
                 "--out", str(a)]) == 0
    assert _config(a)["world_size"] == 2
    _one(["--resume", str(tmp_path / "a.run"), "--epochs", "3", "--quiet", "--no-plots",
          "--out", str(a), "--overwrite"])
    assert a.read_bytes() == ref.read_bytes()
    # 1 process for 1 epoch, then 2 ranks for the rest
    b = tmp_path / "b.bsm"
    _one(["--dataset", "digits", "--epochs", "1", *QUICK, "--out", str(b)])
    r = _torchrun(2, ["--resume", str(tmp_path / "b.run"), "--epochs", "3", "--quiet",
                      "--no-plots", "--out", str(b), "--overwrite"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert b.read_bytes() == ref.read_bytes()


# -- failures -----------------------------------------------------------------------------------
def test_rank_failing_mid_run_stops_all_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "m.bsm"
    # rank 1 dies at step 16 (epoch 2 of 11-step epochs); the others must stop, not hang
    r = _torchrun(2, [*RUNS["digits"], *QUICK, "--out", str(out)], script=WORKER,
                  timeout=180, FAULT="crash:1:16", BITSWARM_DIST_TIMEOUT="60")
    assert r.returncode != 0
    assert not out.exists()
    ck = load_checkpoint(tmp_path / "m.run" / "last.ckpt")  # intact, loads (digest checked)
    assert ck.epoch == 1
    _one(["--resume", str(tmp_path / "m.run"), "--epochs", "3", "--quiet", "--no-plots",
          "--out", str(out)])
    ref = tmp_path / "ref.bsm"
    _one([*RUNS["digits"], *QUICK, "--out", str(ref)])
    assert out.read_bytes() == ref.read_bytes()


def test_rank0_write_failure_stops_every_rank(tmp_path):
    out = tmp_path / "m.bsm"
    r = _torchrun(2, [*RUNS["digits"], *QUICK, "--out", str(out)], script=WORKER, timeout=180,
                  FAULT="write:2")
    assert r.returncode != 0
    assert "bitswarm: error: Permission denied" in r.stderr  # rank 0, one line
    assert "stopping, 1 rank(s) failed writing the epoch-2 checkpoint" in r.stderr  # rank 1
    # no rank shows a traceback; the only one is torchrun's own failure report
    assert r.stderr.count("Traceback") == r.stderr.count("raise ChildFailedError(") == 1
    assert load_checkpoint(tmp_path / "m.run" / "last.ckpt").epoch == 1


def test_nproc_failure_is_one_line(tmp_path, capfd):
    # every rank fails to load the data set; the launcher reports which, in one line
    assert main(["train", "--nproc", "2", "--dataset", f"npz:{tmp_path / 'none.npz'}", "--quiet",
                 "--out", str(tmp_path / "m.bsm")]) == 2
    err = capfd.readouterr().err
    # the ranks that failed before torchrun stopped the rest are named
    assert "bitswarm: error: the 2-process run failed: rank " in err and "(exit code 2)" in err
    assert "Traceback" not in err


def test_onchip_refused_under_torchrun(tmp_path, monkeypatch, capsys):
    args = ["--votes", "integer", "--dataset", "digits", "--epochs", "1", "--quiet", "--out",
            str(tmp_path / "m.bsm")]
    assert main(["train", "--nproc", "2", *args]) == 2
    err = capsys.readouterr().err
    assert "rule 'onchip' cannot train on 2 processes" in err and "once per sample" in err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun; refused before any rendezvous
    monkeypatch.setenv("RANK", "0")
    assert main(["train", *args]) == 2
    assert "rule 'onchip' cannot train on 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "m.run").exists()


def test_nproc_inside_torchrun_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--nproc", "2", "--out", str(tmp_path / "m.bsm")]) == 2
    assert "--nproc inside a torchrun worker" in capsys.readouterr().err


def test_batch_smaller_than_world_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--batch-size", "2", "--out", str(tmp_path / "m.bsm")]) == 2
    assert "batch_size 2 is smaller than the 4 processes" in capsys.readouterr().err


def test_rank_argv_drops_only_nproc():
    from bitswarm.cli import build_parser
    from bitswarm.train.cli import _rank_argv

    argv = ["train", "--dataset", "digits", "--epochs", "3", "--opt", "a=1", "--opt", "b=2",
            "--quiet", "--out", "m.bsm", "--overwrite", "--device", "cpu"]
    args = build_parser().parse_args([*argv[:1], "--nproc", "4", *argv[1:]])
    back = _rank_argv(args)
    assert "--nproc" not in back
    plain = {k: v for k, v in vars(args).items() if k not in ("func", "train_parser")}
    again = {k: v for k, v in vars(build_parser().parse_args(back)).items()
             if k not in ("func", "train_parser")}
    assert again | {"nproc": 4} == plain


# -- CUDA ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dataset", sorted(RUNS))
def test_cuda_writes_the_cpu_bytes(tmp_path, dataset):
    cpu, gpu = tmp_path / "cpu.bsm", tmp_path / "gpu.bsm"
    _one([*RUNS[dataset], *QUICK, "--out", str(cpu)])
    _one([*RUNS[dataset], *QUICK, "--device", "cuda", "--out", str(gpu)])
    assert gpu.read_bytes() == cpu.read_bytes()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_cuda_ranks_nccl_write_the_cpu_bytes(tmp_path):
    cpu, gpu = tmp_path / "cpu.bsm", tmp_path / "gpu.bsm"
    _one([*RUNS["digits"], *QUICK, "--out", str(cpu)])
    r = _torchrun(2, [*RUNS["digits"], *QUICK, "--device", "cuda", "--out", str(gpu)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert gpu.read_bytes() == cpu.read_bytes()
    assert _config(gpu)["backend"] == "nccl"


class _CountingComm(Comm):
    """Rank 0 of 2 whose "all-reduce" keeps its own part: counts what a real one would move."""

    def __init__(self):
        super().__init__(0, 2)

    def all_reduce_sum(self, t):
        assert t.dtype in (torch.int64, torch.int32)
        self.reduced_bytes += t.numel() * t.element_size()
        self.reductions += 1
        return t


def test_allreduce_bytes_per_step_is_what_the_step_reduces():
    from bitswarm.train.data import load_dataset
    from bitswarm.train.rule_golden import GoldenRule
    from bitswarm.train.rules import NetSpec
    from bitswarm.train.trainer import DEFAULT_FLIP

    ds = load_dataset("digits")
    rule = GoldenRule(NetSpec((64, 32, 16, 10), ds.input_shape, flip=DEFAULT_FLIP))
    x, y = torch.from_numpy(ds.x_train[:50]), torch.from_numpy(ds.y_train[:50])
    rule.init_state(x)
    rule.comm = comm = _CountingComm()
    rule.train_step(x, y)
    assert comm.reductions == 2  # two collectives per step
    assert rule.grad_reduce_dtype(50) == torch.int32  # 1024 * 10 * 16 * 255 * 50 < 2**31
    assert comm.reduced_bytes == rule.allreduce_bytes(50) == (
        8 * (3 * (32 + 16) + 50 * 10) + 4 * (64 * 32 + 32 * 16 + 16 * 10))


@pytest.mark.parametrize("arch, batch, dtype", [
    ((64, 512, 10), 128, torch.int32), ((784, 512, 10), 128, torch.int32),
    ((784, 512, 10), 1024, torch.int64), ((784, 256, 256, 256, 10), 128, torch.int64),
])
def test_grad_reduce_dtype_bound(arch, batch, dtype):
    from bitswarm.train.rule_golden import GoldenRule
    from bitswarm.train.rules import NetSpec
    from bitswarm.train.trainer import DEFAULT_FLIP

    rule = GoldenRule(NetSpec(arch, (arch[0],), flip=DEFAULT_FLIP))
    assert rule.grad_reduce_dtype(batch) == dtype

"""``bitswarm sim``: run a model file on the virtual accelerator or on Verilator;
``bitswarm run``: on a board over its UART link; ``bitswarm clean``: empty the Verilator build
cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bitswarm.hw.plan import add_fold_args, plan_from_args

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run a model on the virtual accelerator or cycle-accurately on Verilator")
    p.add_argument("model", help="model file (.bsm)")
    p.add_argument("--backend", choices=("virtual", "verilator"), default="virtual")
    p.add_argument("--dataset", default="digits", help="digits, mnist5k, fashion or npz:PATH (test split)")
    p.add_argument("--data-dir", default=None, help="folder of IDX files for --dataset fashion")
    p.add_argument("--limit", type=int, default=None, help="run only the first N test images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", action="store_true",
                   help="on mismatches, locate the first differing layer/image/neuron (for a "
                   "convolution: layer/image/channel/pixel)")
    p.add_argument("--waves", metavar="FILE", default=None,
                   help="--backend verilator: write a waveform of the run (FILE.vcd, or FILE.fst "
                   "where lz4.h is installed); use with --limit, VCD grows ~1.5 kB per cycle")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --waves or --out file")
    p.add_argument("--train", action="store_true",
                   help="on-chip training (SPEC §12) on the training split (--limit samples) on the "
                   "virtual accelerator or the RTL trainer (--backend verilator), checked bit for bit "
                   "against golden (state, predictions, error flags); reports cycles per sample and "
                   "accuracy after training on the test split")
    p.add_argument("--out", metavar="TRAINED.bsm", default=None,
                   help="with --train: save the trained model (weights, thresholds, accumulators, "
                   "LFSR state) here; an existing file is kept unless --overwrite")
    _add_build_dir(p)
    add_fold_args(p)
    p.set_defaults(func=_cmd_sim)

    c = sub.add_parser("clean", help="remove cached Verilator builds")
    _add_build_dir(c)
    c.set_defaults(func=_cmd_clean)

    r = sub.add_parser("run", help="classify a data set on a board over its UART host link")
    r.add_argument("model", help="model file (.bsm) the board was built from")
    r.add_argument("--port", required=True,
                   help="serial port (e.g. /dev/ttyUSB1) or a pyserial URL")
    r.add_argument("--baud", type=int, default=115200)
    r.add_argument("--dataset", default="digits", help="digits, mnist5k, fashion or npz:PATH")
    r.add_argument("--data-dir", default=None, help="folder of IDX files for --dataset fashion")
    r.add_argument("--limit", type=int, default=None,
                   help="only the first N test images (with --train: training samples)")
    r.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--train", action="store_true",
                   help="the board runs the on-chip trainer (`bitswarm bitstream MODEL --train`): "
                   "check its INFO against MODEL, train on the training split (--limit samples), "
                   "read the whole state back, save it to --out; prints the per-sample error rate, "
                   "the test accuracy after training and mismatches against the virtual trainer")
    r.add_argument("--out", metavar="TRAINED.bsm", default=None,
                   help="with --train: the trained model file to write")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    r.set_defaults(func=_cmd_run)


def _add_build_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-dir", metavar="DIR", default=None,
                   help="folder of the Verilator build cache (default: $BITSWARM_BUILD_DIR, else "
                   "./sim_build); the 16 most recently used builds are kept ($BITSWARM_BUILD_KEEP)")


def _build_root(args) -> Path:
    from bitswarm.golden.errors import ConfigError

    from .verilator import BUILD_DIR_ENV, default_build_root

    root = Path(args.build_dir) if args.build_dir else default_build_root()
    if root.exists() and not root.is_dir():
        source = "--build-dir" if args.build_dir else f"${BUILD_DIR_ENV}"
        raise ConfigError(f"{source} {root} exists and is not a folder")
    return root


def _cmd_clean(args) -> int:
    from .verilator import clean_builds

    root = _build_root(args)
    gone = clean_builds(root)
    print(f"bitswarm clean: removed {len(gone)} build folder(s) from {root}", file=sys.stderr)
    return 0


def _check_waves(args) -> Path | None:
    """The ``--waves`` path, checked before anything runs: Verilator inference only, a .vcd or
    .fst name, a writable folder, no existing file unless ``--overwrite``."""
    from bitswarm.golden.errors import ConfigError

    if args.waves is None:
        return None
    w = Path(args.waves)
    if args.backend != "verilator" or args.train:
        raise ConfigError("--waves needs --backend verilator (inference, not --train)")
    if w.suffix.lower() not in (".vcd", ".fst"):
        raise ConfigError(f"--waves file must end in .vcd or .fst, not {w.name!r}")
    if w.is_dir():
        raise ConfigError(f"--waves {w} is a folder")
    if w.exists() and not args.overwrite:
        raise ConfigError(f"{w} exists; pass --overwrite to replace it")
    if not w.parent.is_dir():
        raise ConfigError(f"--waves: no folder {w.parent}")
    if w.suffix.lower() == ".fst":
        from .bulk import _has_lz4

        if not _has_lz4():
            raise ConfigError("FST waveforms need the LZ4 headers (lz4.h; Debian: liblz4-dev), "
                              "which this machine lacks; write a .vcd file instead")
    return w


def _check_out(args) -> None:
    """``--out`` only with ``--train``; an existing file refused without ``--overwrite`` and
    an unwritable place refused, both before the long run."""
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.files import check_outputs

    if args.out is None:
        return
    if not args.train:
        raise ConfigError("--out needs --train (it saves the trained model)")
    check_outputs([args.out], overwrite=args.overwrite)


def _cmd_sim(args) -> int:
    import tempfile

    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.model import load_model
    from bitswarm.train.data import load_dataset

    from .driver import evaluate, make_backend
    from .trace import locate_mismatch

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, not {args.limit}")
    waves = _check_waves(args)
    _check_out(args)
    build_root = _build_root(args) if args.backend == "verilator" else None
    model = load_model(args.model)
    ds = load_dataset(args.dataset, args.data_dir)
    if args.train:
        return _cmd_train(args, model, ds, build_root)
    if tuple(ds.input_shape) != tuple(model.cfg.input_shape) and ds.n_inputs != model.cfg.layers[0].in_size:
        raise ConfigError(
            f"{args.dataset} samples are {'x'.join(map(str, ds.input_shape))} but the model takes "
            f"{'x'.join(map(str, model.cfg.input_shape))}")
    x, y = ds.x_test, ds.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    x = x.reshape((len(x),) + tuple(model.cfg.input_shape))
    plan = plan_from_args(model.cfg, args)
    if not args.json:
        print(f"bitswarm sim: {args.backend} backend, {len(x)} images of {ds.name}, plan "
              + ", ".join(f"L{i}(pe={f.pe},simd={f.simd},pipe={f.pipeline})" for i, f in enumerate(plan.folds)),
              file=sys.stderr, flush=True)
    kw = {}
    tmp_waves = None
    if build_root is not None:
        kw["build_root"] = build_root
    if waves is not None:  # written beside the target, moved into place once complete
        fd, name = tempfile.mkstemp(prefix=f".{waves.stem}.", suffix=waves.suffix, dir=waves.parent)
        os.close(fd)
        tmp_waves = Path(name)
        kw["waves"] = tmp_waves
    try:
        backend = make_backend(args.backend, model, plan, **kw)
        rep = evaluate(backend, x, y)
        if tmp_waves is not None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_waves, 0o666 & ~umask)  # mkstemp's 0600 -> an ordinary file's mode
            os.replace(tmp_waves, waves)
            tmp_waves = None
    finally:
        if tmp_waves is not None:
            tmp_waves.unlink(missing_ok=True)
    bad = rep.pop("_bad_images")
    out = {
        "accuracy": rep["accuracy"],
        "n": rep["n"],
        "mismatches": rep["mismatches"],
        "mismatched_images": rep["mismatched_images"],
        "first_difference": rep["first_difference"],
        "cycles_per_inference": rep["cycles_per_inference"],
        "backend": args.backend,
        "fold": plan.to_dict(),
    }
    if waves is not None:
        out["waves"] = str(waves)
    for k in ("images_per_s_host", "simulated_cycles_per_s"):
        if k in rep:
            out[k] = round(rep[k], 1)
    if len(bad) and args.trace:
        import torch

        idx = bad[:8]
        gt: list = []
        model.forward(torch.as_tensor(x[idx]), trace=gt)
        out["first_mismatch"] = locate_mismatch(model.cfg, [t.numpy() for t in gt],
                                                backend.trace(x[idx]), image_ids=idx)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"accuracy {out['accuracy']:.4f} on {out['n']} images, mismatches {out['mismatches']}, "
              f"{out['cycles_per_inference']} cycles per inference")
        if out["mismatches"]:
            more = out["mismatches"] - len(out["mismatched_images"])
            print("mismatched test images: " + ", ".join(map(str, out["mismatched_images"]))
                  + (f" (and {more} more)" if more > 0 else ""))
            d = out["first_difference"]
            if d["kind"] == "score":
                print(f"first difference: image {d['image']}, score of class {d['class']} is "
                      f"{d['backend']}, golden {d['golden']}")
            else:
                print(f"first difference: image {d['image']}, predicted class {d['backend']}, "
                      f"golden {d['golden']} (scores agree)")
        if "first_mismatch" in out:
            print(f"first mismatch: {out['first_mismatch']}")
        if waves is not None:
            print(f"waveform written to {waves}")
    return 1 if out["mismatches"] else 0


def _state_mismatches(a, b) -> int:
    """Differing integer state elements (weight bits, accumulators, thresholds, LFSR state)."""
    n = int(a.lfsr_state != b.lfsr_state)
    for name in ("weights", "acc", "theta"):
        n += sum(int((x != y).sum()) for x, y in zip(getattr(a, name), getattr(b, name), strict=True))
    return n


def _cmd_train(args, model, ds, build_root: Path | None = None) -> int:
    """On-device training (SPEC §12) on the virtual accelerator or the RTL on Verilator, checked
    against golden ``onchip_train`` over the whole run."""
    import time

    import numpy as np
    import torch
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.model import Model
    from bitswarm.golden.onchip import OnChipConfig, onchip_train

    from .onchip import VirtualTrainer, cycles_per_sample

    try:
        oc = OnChipConfig.from_meta(model.cfg.meta)
    except ConfigError as e:
        raise ConfigError(f"{args.model}: {e}; train the model with `bitswarm train --votes integer`") from None
    if model.acc is None:
        model = Model(model.cfg, model.weights, model.theta, model.invert,
                      [torch.zeros(lay.weight_shape(), dtype=torch.int32) for lay in model.cfg.layers],
                      model.cfg.flip.lfsr.seed)
    x, y = ds.x_train, ds.y_train
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    x = np.ascontiguousarray(x.reshape(len(x), -1))
    y = np.asarray(y)
    extra = {}
    fold = None  # --fold with --train: the trainer fold (PExSIMD per layer, or its JSON file)
    if getattr(args, "fold", None):
        from bitswarm.hw.plan import TrainerFold

        fold = TrainerFold.parse(args.fold, model.cfg)
    if args.backend == "virtual":
        trainer = VirtualTrainer(model, oc, fold=fold)
        t0 = time.perf_counter()
        preds, errs = trainer.train(x, y)
        secs = time.perf_counter() - t0
        cycles = trainer.cycles.total
    else:
        from .bulk import VerilatorTrainer

        trainer = VerilatorTrainer(model, oc, fold=fold, build_root=build_root)
        trainer.build()
        t0 = time.perf_counter()
        run = trainer.train(x, y)
        secs = time.perf_counter() - t0
        preds, errs = run.preds, run.errors
        iv = run.intervals
        cycles = int(np.median(iv)) if len(iv) else cycles_per_sample(model.cfg, trainer.p, trainer.fold).total
        extra = {"cycles_per_sample_model": cycles_per_sample(model.cfg, trainer.p, trainer.fold).total,
                 "sim_cycles_per_s": round(run.cycles / run.seconds) if run.seconds > 0 else None}
    gold = Model(model.cfg, [w.clone() for w in model.weights], [t.clone() for t in model.theta],
                 [v.clone() for v in model.invert], [a.clone() for a in model.acc], model.lfsr_state)
    res = onchip_train(oc, gold, torch.from_numpy(x), torch.from_numpy(y))
    got = trainer.export()
    g_pred = np.array([r.pred for r in res])
    g_err = np.array([int(bool(r.errors[-1].any())) for r in res])
    mism = _state_mismatches(got, gold) + int((np.asarray(preds) != g_pred).sum()) + int((np.asarray(errs) != g_err).sum())
    xt = ds.x_test.reshape(len(ds.x_test), -1)
    acc = float((got.predict(torch.from_numpy(xt)).numpy() == ds.y_test).mean())
    out = {"samples": int(len(y)), "mismatches": mism, "cycles_per_sample": cycles, "accuracy_after": acc,
           "backend": args.backend, "host_samples_per_s": round(len(y) / secs, 1) if secs > 0 else None, **extra}
    if args.out is not None:
        from bitswarm.golden.model import save_model

        save_model(got, args.out)
        out["out"] = str(args.out)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"trained on {out['samples']} samples ({args.backend}): mismatches {out['mismatches']}, "
              f"{out['cycles_per_sample']} cycles per sample, test accuracy after {acc:.4f}"
              + (f"; trained model saved to {args.out}" if args.out is not None else ""))
    return 1 if out["mismatches"] else 0


def _cmd_run(args) -> int:
    import numpy as np
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.model import load_model
    from bitswarm.sim.driver import evaluate
    from bitswarm.sim.hostlink import BoardBackend, HostLink, LinkFormat, SerialTransport
    from bitswarm.train.data import load_dataset

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, not {args.limit}")
    if args.train:
        return _cmd_run_train(args)
    if args.out is not None:
        raise ConfigError("--out needs --train (it saves the trained model)")
    model = load_model(args.model)
    ds = load_dataset(args.dataset, args.data_dir)
    if ds.n_inputs != model.cfg.layers[0].in_size:
        raise ConfigError(f"{args.dataset} samples have {ds.n_inputs} pixels but the model takes "
                          f"{model.cfg.layers[0].in_size}")
    x, y = ds.x_test, ds.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    x = np.asarray(x).reshape((len(x),) + tuple(model.cfg.input_shape))
    tr = SerialTransport(args.port, args.baud, timeout=args.timeout)
    try:
        link = HostLink(LinkFormat.for_model(model), tr)
        link.resync()
        rep = evaluate(BoardBackend(model, link), x, y)
    finally:
        tr.close()
    bad = rep.pop("_bad_images")
    out = {"port": args.port, "n": rep["n"], "accuracy": rep["accuracy"],
           "mismatches": rep["mismatches"], "mismatched_images": [int(i) for i in bad[:20]],
           "images_per_s_link": round(rep.get("images_per_s_host", 0.0), 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"accuracy {out['accuracy']:.4f} on {out['n']} images over {args.port}, "
              f"mismatches vs golden {out['mismatches']}"
              + (f" (images {out['mismatched_images']})" if out["mismatches"] else "")
              + f", {out['images_per_s_link']} images/s over the link")
    return 1 if out["mismatches"] else 0


def _cmd_run_train(args) -> int:
    """``bitswarm run MODEL --port P --train --out TRAINED.bsm``: a trainer board over its link."""
    import time

    import numpy as np
    import torch
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.files import check_outputs
    from bitswarm.golden.model import load_model, save_model
    from bitswarm.hw.onchip_board import DEFAULT_TIMEOUT_BYTES, check_trainable
    from bitswarm.progress import step
    from bitswarm.sim.hostlink import SerialTransport, TrainerLink
    from bitswarm.train.data import load_dataset

    from .onchip import VirtualTrainer

    if args.out is None:
        raise ConfigError("--train needs --out TRAINED.bsm (the file the trained model is saved to)")
    check_outputs([args.out], overwrite=args.overwrite)
    model = load_model(args.model)
    try:
        oc = check_trainable(model)
    except ConfigError as e:
        raise ConfigError(f"{args.model}: {e}") from None
    ds = load_dataset(args.dataset, args.data_dir)
    n0 = model.cfg.layers[0].n_in
    if ds.n_inputs != n0:
        raise ConfigError(f"{args.dataset} samples have {ds.n_inputs} pixels but the model takes {n0}")
    x, y = ds.x_train, ds.y_train
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    x = np.ascontiguousarray(np.asarray(x).reshape(len(x), -1))
    y = np.asarray(y)
    n = len(y)
    t0 = time.monotonic()
    last = [t0]

    def progress(done, errors):
        now = time.monotonic()
        if done == n or now - last[0] >= 2.0:
            last[0] = now
            rate = done / (now - t0) if now > t0 else 0.0
            print(f"bitswarm: trained {done}/{n} samples on {args.port}, error rate "
                  f"{errors / done:.3f}, {rate:.1f} samples/s", file=sys.stderr, flush=True)

    tr = SerialTransport(args.port, args.baud, timeout=args.timeout)
    try:
        link = TrainerLink(model, tr, oc)
        link.resync(2 * DEFAULT_TIMEOUT_BYTES * 10 / args.baud)
        info = link.identify()
        preds, errs = link.train(x, y, progress=progress)
        secs = time.monotonic() - t0
        with step(f"reading the trained state back ({info.queries} debug words)"):
            state = link.read_state()
    finally:
        tr.close()
    virt = VirtualTrainer(model, oc)
    v_pred, v_err = virt.train(x, y)
    mism = (_state_mismatches(state, virt.export()) + int((preds != np.asarray(v_pred)).sum())
            + int((errs != np.asarray(v_err)).sum()))
    save_model(state, args.out)
    xt = ds.x_test.reshape(len(ds.x_test), -1)
    acc = float((state.predict(torch.from_numpy(xt)).numpy() == ds.y_test).mean())
    out = {"port": args.port, "samples": n, "error_rate": round(float(errs.mean()), 4) if n else 0.0,
           "accuracy_after": acc, "mismatches": mism, "samples_per_s_link": round(n / secs, 1) if secs > 0 else None,
           "config_hash": f"0x{info.config_hash:08x}", "out": str(args.out)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"trained on {n} samples over {args.port}: error rate {out['error_rate']:.4f} per sample, "
              f"test accuracy after {acc:.4f}, mismatches vs the virtual trainer {mism}, "
              f"{out['samples_per_s_link']} samples/s over the link; trained model saved to {args.out}")
    return 1 if mism else 0

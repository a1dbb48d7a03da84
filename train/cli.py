"""Training subcommands: ``train`` and ``eval``.

``bitswarm train --dataset D [--arch 64-128-10 | 1x8x8-c16k3p1-mp2-10] [--swarm S] [--epochs N] [--seed N]
[--rule NAME] --out MODEL [--checkpoint-dir DIR] [--resume CKPT]`` trains and writes a model
file (plus ``metrics.jsonl``, plots and ``last.ckpt`` in the run folder).
``bitswarm eval MODEL --dataset D [--json]`` prints the golden forward pass's test accuracy.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "FLIP_FLAGS"]

NOISE_MODES = ("none", "additive", "stochastic")  # golden.flip.NOISE_MODES (checked by a test)

#: The integrate-and-fire flags of ``bitswarm train``, declared once: (flag, key in
#: ``FlipRuleConfig.to_dict()`` -- ``lfsr.X`` inside the LFSR --, type, help).
FLIP_FLAGS = (
    ("--acc-width", "acc_width", int, "accumulator bits A, 2..32"),
    ("--leak-shift", "leak_shift", int, "leak a -= a >> L each step (0: none)"),
    ("--flip-threshold", "threshold", int, "a bit flips when its accumulator reaches this"),
    ("--refractory", "refractory", int, "accumulator value after a flip"),
    ("--noise", "noise", str, "LFSR noise: none, additive or stochastic firing"),
    ("--fire-prob", "fire_prob", int, "stochastic firing probability, in units of 2**-draw_bits"),
    ("--lfsr-width", "lfsr.width", int, "noise LFSR width"),
    ("--lfsr-seed", "lfsr.seed", int, "noise LFSR seed (nonzero)"),
    ("--lfsr-draw-bits", "lfsr.draw_bits", int, "bits per LFSR draw b"),
)


def _rule_names() -> list[str]:
    from .rules import RULES, get_rule

    get_rule("golden")
    return list(RULES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a golden model (or a reference network) on an offline data set",
        description="Train an integer-only binary network (MLP or CNN). Rules: golden (integrate-and-fire flips "
        "from host-assisted votes, the default), ste-adam, bop (exportable references), float "
        "(metrics only). Unset options are taken from the checkpoint with --resume.",
    )
    from bitswarm.golden.arch import ARCH_HELP

    a = p.add_argument
    a("--dataset", default=None, help="digits (default), mnist5k, fashion or npz:PATH")
    a("--arch", default=None, help=f"{ARCH_HELP} (default: inputs-2048-classes for MNIST-sized inputs, inputs-512-classes below)")
    a("--swarm", type=int, default=None, help="bits per weight S (1, 2, 4, ..., 32; default 1)")
    a("--weights", default=None, choices=["binary", "ternary"],
      help="weights of every layer: binary (S bit-planes, the default) or ternary (trits -1/0/+1, "
      "S = 1, stepped one level by the golden rule's integrate-and-fire, golden SPEC.md §8.1)")
    a("--epochs", type=int, default=None, help="total epochs, >= 1 (default: digits 30, mnist5k 60, fashion 20, others 30)")
    a("--seed", type=int, default=None, help="weights and data-order seed (default 0)")
    a("--rule", default=None, help="training rule (default golden; see `bitswarm train --list-rules`)")
    a("--votes", default=None, choices=["host", "integer"],
      help="vote source of the golden rule: host (host-assisted STE, default) or integer (fully "
      "integer per-sample votes, the on-chip rule `onchip`)")
    a("--batch-size", type=int, default=None, help="minibatch size (default 256 for MNIST-sized inputs, 128 below)")
    a("--input-bits", type=int, default=None, help="first-layer input bits: 8 (pixels, default) .. 1")
    a("--opt", action="append", default=None, metavar="NAME=VALUE",
      help="rule option, repeatable (e.g. --opt vote_pct=100)")
    g = p.add_argument_group("integrate-and-fire constants (golden and on-chip rules; stored in the "
                             "model file; defaults: golden FlipRuleConfig.for_training)")
    for flag, _key, typ, help_ in FLIP_FLAGS:
        kw = {"choices": list(NOISE_MODES)} if flag == "--noise" else {"type": typ}
        g.add_argument(flag, default=None, help=help_, **kw)
    a("--out", default=None, help="model file to write (refused for --rule float)")
    a("--checkpoint-dir", default=None, help="run folder (default: OUT without suffix + .run)")
    a("--resume", default=None, metavar="CKPT", help="continue from a checkpoint (file or run folder)")
    a("--overwrite", action="store_true",
      help="replace an existing --out model file, or start afresh in a run folder that holds a "
      "checkpoint (both refused without it)")
    a("--device", default="cpu", help="cpu (default) or cuda")
    a("--data-dir", default=None, help="folder of IDX files for --dataset fashion")
    a("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    a("--no-plots", action="store_true", help="skip the PNG plots")
    a("--list-rules", action="store_true", help="list the training rules and exit")
    a("--nproc", type=int, default=None, metavar="N",
      help="train data-parallel on N local processes: shorthand for `torchrun --standalone "
      "--nproc-per-node N -m bitswarm train ...` (same model bytes as one process)")
    p.set_defaults(func=_cmd_train, train_parser=p)

    p = sub.add_parser("eval", help="test accuracy of a model file (golden forward pass)")
    p.add_argument("model", help="model file")
    p.add_argument("--dataset", default="digits", help="digits (default), mnist5k, fashion or npz:PATH")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--data-dir", default=None, help="folder of IDX files for --dataset fashion")
    p.add_argument("--json", action="store_true", help='print {"accuracy": ..., "n": ...}')
    p.set_defaults(func=_cmd_eval)


def _flip_given(args) -> bool:
    return any(getattr(args, _dest(flag)) is not None for flag, *_ in FLIP_FLAGS)


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _flip_config(args, base):
    """``base`` (a golden ``FlipRuleConfig``) with the flip flags that were given. A new LFSR
    width without a seed or draw-bit count clips the base's to the width."""
    from bitswarm.golden.flip import FlipRuleConfig

    d = base.to_dict()
    for flag, key, _typ, _help in FLIP_FLAGS:
        v = getattr(args, _dest(flag))
        if v is not None:
            head, _, tail = key.partition(".")
            (d[head] if tail else d)[tail or head] = v
    if args.lfsr_width is not None and args.lfsr_seed is None:
        d["lfsr"]["seed"] = min(d["lfsr"]["seed"], (1 << args.lfsr_width) - 1)
    if args.lfsr_width is not None and args.lfsr_draw_bits is None:
        d["lfsr"]["draw_bits"] = min(d["lfsr"]["draw_bits"], args.lfsr_width)
    return FlipRuleConfig.from_dict(d)


def _options(items) -> dict:
    from bitswarm.golden.errors import ConfigError

    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--opt takes NAME=VALUE, not {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _weights_option(args, given: dict) -> None:
    """``--weights KIND`` as the golden rule's ``weights`` option (only it trains trits with
    SPEC.md §8.1); with ``--resume`` it must be the checkpoint's."""
    from bitswarm.golden.errors import ConfigError

    if args.rule not in (None, "golden"):
        if args.weights == "ternary":
            raise ConfigError(f"--weights ternary trains with the golden rule, not --rule {args.rule} "
                              "(the zoo's ternary rules: ternary-scale, ternary-scale-trits, bitnet-absmean)")
        return
    if args.resume is not None:
        from .checkpoint import load_checkpoint

        saved = load_checkpoint(args.resume).config.get("options", {}).get("weights", "binary")
        if saved != args.weights:
            raise ConfigError(f"--weights {args.weights} differs from the checkpoint's ({saved}); a "
                              "resumed run keeps its configuration")
        return
    if args.weights == "ternary":
        given["options"] = {**(given["options"] or {}), "weights": "ternary"}


def _rank_argv(args) -> list[str]:
    """The ``train`` command line ``args`` were parsed from, without ``--nproc`` (for the ranks)."""
    argv = ["train"]
    for act in args.train_parser._actions:
        if not act.option_strings or act.dest in ("help", "nproc"):
            continue
        v = getattr(args, act.dest)
        if v is None or v is False or v == act.default:
            continue
        flag = act.option_strings[0]
        if v is True:
            argv.append(flag)
        elif isinstance(v, list):
            for item in v:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(v)]
    return argv


def _cmd_train(args) -> int:
    import dataclasses

    from .rules import RULES, get_rule
    from .trainer import TrainConfig, parse_arch, train

    if args.list_rules:
        get_rule("golden")
        for name, cls in RULES.items():
            tags = ("exportable" if cls.exportable else "metrics only") + (
                ", hardware-trainable" if cls.hardware_trainable else "")
            print(f"{name:10s} {cls.summary} [{tags}]")
        return 0
    rank_argv = _rank_argv(args) if args.nproc is not None else None
    if args.votes == "integer":
        from bitswarm.golden.errors import ConfigError

        if args.rule not in (None, "golden", "onchip"):
            raise ConfigError(f"--votes integer applies to the golden rule, not --rule {args.rule}")
        args.rule = "onchip"
    given = {
        "dataset": args.dataset,
        "arch": parse_arch(args.arch) if args.arch is not None else None,
        "swarm": args.swarm, "epochs": args.epochs, "seed": args.seed, "rule": args.rule,
        "batch_size": args.batch_size, "input_bits": args.input_bits,
        "options": _options(args.opt) if args.opt is not None else None,
    }
    if args.weights is not None:
        _weights_option(args, given)
    flip_given = _flip_given(args)
    from .trainer import default_flip

    if args.resume is not None:
        from .checkpoint import load_checkpoint

        saved = TrainConfig.from_dict(load_checkpoint(args.resume).config)
        base = saved
    else:
        base = TrainConfig()
    kw = {k: v for k, v in given.items() if v is not None}
    if args.resume is None:
        base_flip = default_flip(kw.get("swarm", 1), kw.get("rule", "golden"))
        kw["flip"] = _flip_config(args, base_flip) if flip_given else base_flip
    elif flip_given:
        kw["flip"] = _flip_config(args, base.flip)
    cfg = dataclasses.replace(base, **kw)
    if args.resume is not None:  # explicit options must agree with the checkpoint
        for k in kw:
            if k != "epochs" and getattr(cfg, k) != getattr(saved, k):
                from bitswarm.golden.errors import ConfigError

                raise ConfigError(f"--{k.replace('_', '-')} differs from the checkpoint's; "
                                  "a resumed run keeps its configuration (only --epochs may change)")
    if args.nproc is not None and args.nproc != 1:
        from bitswarm.golden.errors import ConfigError

        from .distributed import env_world_size, launch

        if args.nproc < 1:
            raise ConfigError(f"--nproc must be >= 1, not {args.nproc}")
        if env_world_size() > 1:
            raise ConfigError("--nproc inside a torchrun worker; give one or the other")
        cls = get_rule(cfg.rule)
        if not cls.data_parallel:
            raise ConfigError(f"rule {cfg.rule!r} cannot train on {args.nproc} processes: "
                              f"{cls.serial_reason}; drop --nproc")
        return launch(args.nproc, rank_argv)
    res = train(cfg, out=args.out, run_dir=args.checkpoint_dir, resume=args.resume,
                device=args.device, data_dir=args.data_dir, quiet=args.quiet,
                plots=not args.no_plots, overwrite=args.overwrite)
    if not res.rule.comm.is_writer:  # data-parallel: rank 0 reports
        return 0
    last = res.metrics[-1] if res.metrics else None
    best = max((m["test_accuracy"] for m in res.metrics), default=None)
    msg = f"trained {res.config.rule} on {res.config.dataset}: {len(res.metrics)} epochs"
    if last is not None:
        msg += f", test accuracy {100 * last['test_accuracy']:.2f} % (best {100 * best:.2f} %)"
    if args.out is not None:
        msg += f"; model written to {args.out}"
    print(msg + f"; run folder {res.run_dir}")
    return 0


def _cmd_eval(args) -> int:
    from bitswarm.golden.model import load_model

    from .data import load_dataset
    from .trainer import check_arch, evaluate

    m = load_model(args.model)
    ds = load_dataset(args.dataset, args.data_dir)
    check_arch(m.cfg.arch_string if m.cfg.has_conv else tuple(m.cfg.arch), ds)
    x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
    acc, n = evaluate(m, x if m.cfg.has_conv else x.reshape(len(x), -1), y)
    if args.json:
        print(json.dumps({"accuracy": acc, "n": n}))
    else:
        print(f"{args.model}: accuracy {100 * acc:.2f} % on {n} {args.split} samples of {ds.name}")
    return 0

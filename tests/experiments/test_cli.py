"""The study's command line: outputs, TensorBoard tags, bad input, torchrun with two processes, Ctrl-C."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fused_optim.experiments import outputs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "range_test.py"
QUICK = ["--num-iter", "30", "--limit-batches", "12", "--trust-every", "5", "--train-epochs", "1"]


def _run(args, timeout=240, env=None, launcher=None):
    cmd = (launcher or [sys.executable]) + [str(SCRIPT)] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def _tags(event_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"]), acc


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    proc = _run(QUICK + ["--optimizers", "sgd,lamb", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_outputs_are_all_written(quick_run):
    for name in ["config.json", "summary.json", "report.md", "curves.csv", "trust.csv", "training.csv",
                 "test_loss.csv", "range_sgd.png", "range_lamb.png", "range_all.png", "trust_lamb.png"]:
        assert (quick_run / name).is_file(), name
    summary = json.loads((quick_run / "summary.json").read_text())
    for name in ("sgd", "lamb"):
        s = summary["optimizers"][name]
        for key in ("min_lr", "max_lr", "diverge_lr", "best_loss", "heuristics"):
            assert key in s
        assert set(s["heuristics"]) >= {"steepest", "valley", "min_over_10"}
        assert s["iterations"] <= 30
    config = json.loads((quick_run / "config.json").read_text())
    assert config["optimizers"] == ["sgd", "lamb"] and config["num_iter"] == 30
    report = (quick_run / "report.md").read_text()
    assert "How to read the region" in report and "| lamb |" in report and "Trust ratios" in report


def test_tensorboard_tags_read_back(quick_run):
    tags, acc = _tags(quick_run / "tensorboard" / "lamb-range-test")
    assert {"LR/train", "Loss/train", "Loss/test"} <= tags
    assert any(t.startswith("TrustRatio/") for t in tags) and any(t.startswith("EffectiveLR/") for t in tags)
    rows = [r for r in csv.DictReader(open(quick_run / "curves.csv")) if r["optimizer"] == "lamb"]
    lrs = acc.Scalars("LR/train")
    assert len(lrs) == len(rows)
    # the lr logged at step i is the lr of the update whose loss is logged at step i
    assert [e.step for e in lrs] == [int(r["iteration"]) for r in rows]
    assert lrs[0].value == pytest.approx(float(rows[0]["lr"]), rel=1e-6)
    summary = json.loads((quick_run / "summary.json").read_text())
    assert acc.Scalars("Loss/test")[-1].value == pytest.approx(summary["optimizers"]["lamb"]["test_loss_at_stop"])
    tags, acc = _tags(quick_run / "tensorboard" / "sgd-onecycle")
    assert {"LR/train", "Loss/train", "Loss/test"} <= tags
    # a mean cross-entropy after a few batches (ln 10 = 2.3 at chance), not one divided by the 10 test batches
    assert 0.5 < acc.Scalars("Loss/test")[-1].value < 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["--optimizers", "sgd,rmsprop"], "unknown optimizer 'rmsprop'"),
        (["--start-lr", "1", "--end-lr", "0.1"], "start_lr must be below end_lr"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--impl", "apex"], "invalid choice"),
        (["--num-iter", "1"], "--num-iter must be at least 2"),
    ],
)
def test_bad_arguments_fail_before_any_work(args, message, tmp_path):
    out = tmp_path / "never"
    proc = _run(args + ["--out", str(out)], timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not out.exists()


def test_unwritable_or_existing_out_is_refused(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    proc = _run(["--out", str(existing), "--dry-run"], timeout=60)
    assert proc.returncode == 2 and "never overwritten" in proc.stderr
    assert (existing / "keep.txt").read_text() == "mine" and len(list(existing.iterdir())) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _run(["--out", str(blocker / "sub"), "--dry-run"], timeout=60)
    assert proc.returncode == 2 and "cannot write to the output folder" in proc.stderr


def test_default_run_folders_are_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = outputs.new_run_dir(None)
    second = outputs.new_run_dir(None)
    assert first != second and first.parent == second.parent == Path("runs")


def test_torchrun_two_processes_only_rank0_writes(tmp_path):
    out = tmp_path / "ddp"
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _run(["--optimizers", "sgd", "--num-iter", "12", "--limit-batches", "6", "--train-epochs", "0",
                 "--out", str(out)], launcher=torchrun, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert proc.stdout.count("writing to") == 1  # rank 1 neither creates a folder nor reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    rows = list(csv.DictReader(open(out / "curves.csv")))
    assert len(rows) == len({r["iteration"] for r in rows}) == summary["optimizers"]["sgd"]["iterations"]


def _wait_for_rows(proc: subprocess.Popen, csv_path: Path, rows: int, limit: float = 600) -> None:
    """Until the run has written `rows` rows (slow machines take their time to start); fails if it ended first."""
    deadline = time.time() + limit
    while not (csv_path.is_file() and len(csv_path.read_text().splitlines()) > rows):
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {rows} rows: {proc.communicate()[1][-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"fewer than {rows} rows after {limit} s")
        time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_readable_partial_outputs(tmp_path, sig):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--optimizers", "sgd,adam", "--num-iter", "100000", "--end-lr", "1e-3",
         "--start-lr", "1e-9", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A suite started in the background by a shell inherits SIGINT ignored, and so would the run (as it
        # should): give it the default disposition a terminal's Ctrl-C meets.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    curves = out / "curves.csv"
    _wait_for_rows(proc, curves, 20)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit 300 s after {sig.name}: {proc.communicate()[1][-3000:]}")
    assert proc.returncode == 130, err[-3000:]
    rows = list(csv.DictReader(open(curves)))
    assert len(rows) > 19 and all(r["lr"] and r["loss"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert "Interrupted" in (out / "report.md").read_text()
    tags, _ = _tags(out / "tensorboard" / "sgd-range-test")
    assert {"LR/train", "Loss/train"} <= tags


def _pid_of_rank(rank: int, marker: str) -> int | None:
    """The worker process of `rank` in the torchrun job whose command line contains `marker` (Linux /proc)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and marker.encode() in cmdline and b"range_test.py" in cmdline:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_killed_rank_leaves_complete_outputs_on_rank0(tmp_path):
    out = tmp_path / "killed"
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        torchrun + [str(SCRIPT), "--optimizers", "sgd", "--num-iter", "100000", "--start-lr", "1e-9", "--end-lr",
                    "1e-3", "--trust-every", "0", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        curves = out / "curves.csv"
        _wait_for_rows(proc, curves, 20)
        victim = _pid_of_rank(1, str(out))
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] and not summary["interrupted"]
    report = (out / "report.md").read_text()
    assert "Failed" in report and "sgd: sweep cut short after" in report
    rows = list(csv.DictReader(open(curves)))
    assert len(rows) > 19 and all(r["lr"] and r["loss"] for r in rows)
    tags, acc = _tags(out / "tensorboard" / "sgd-range-test")
    assert {"LR/train", "Loss/train"} <= tags and len(acc.Scalars("Loss/train")) >= 20


def test_study_mode_steps_multistep_per_epoch_and_reports_the_differences(tmp_path):
    out = tmp_path / "study"
    proc = _run(["--study", "--study-epochs", "6", "--limit-batches", "3", "--optimizers", "sgd,lamb",
                 "--trust-every", "0", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizers"]["sgd"]["planned_iterations"] == 18  # the sweep spans the protocol's epochs
    assert set(summary["training"]) == {"sgd-onecycle", "lamb-onecycle", "sgd-multistep-10-20",
                                        "sgd-multistep-5-10-15-20-25"}
    rows = [r for r in csv.DictReader(open(out / "training.csv")) if r["run"] == "sgd-multistep-5-10-15-20-25"]
    lr_by_epoch = {int(r["epoch"]): float(r["lr"]) for r in rows}
    # Milestones are epochs: lr 0.1 for epochs 0-4, decayed once from epoch 5 on (not at iterations 5, 10, ...).
    assert [lr_by_epoch[e] for e in range(6)] == pytest.approx([0.1] * 5 + [0.01])
    assert len(rows) == 18
    report = (out / "report.md").read_text()
    assert "Differences from the original study" in report and "Sweep length" in report
    assert summary["training"]["sgd-onecycle"]["momentum_before"] == summary["training"]["sgd-onecycle"][
        "momentum_after"]

"""The GPU check script's measuring and table code, run on the CPU with small shapes so that it cannot rot."""

import gpu_check
import torch


def test_measure_and_table_on_cpu():
    providers = {k: v for k, v in gpu_check.PROVIDERS.items() if k[1] in ("ours-foreach", "torch-sgd-fused")}
    providers[("lars", "torch-sgd-fused")] = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True)
    rows = gpu_check.measure(["lenet5"], [torch.float32], torch.device("cpu"), steps=2, providers=providers)
    assert {(r["op"], r["provider"]) for r in rows} == set(providers)
    lars = next(r for r in rows if r["provider"] == "ours-foreach" and r["op"] == "lars")
    assert lars["bytes_per_param"] == 28 and lars["ratio"] > 0 and lars["numel"] == 61706
    text = gpu_check.table(rows)
    assert text.count("\n") == len(rows) + 1 and "| lars | lenet5" in text


def test_without_cuda_it_says_so(capsys):
    if torch.cuda.is_available():
        return
    assert gpu_check.main(["--skip-tests"]) == 2
    assert "no CUDA device" in capsys.readouterr().out

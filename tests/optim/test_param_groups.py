import pytest
import torch
from torch import nn

import fused_optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.BatchNorm2d(2)
        self.fc = nn.Linear(4, 3)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_biases_and_norm_weights_take_no_decay_and_no_adaptation():
    net = Net()
    groups = fused_optim.param_groups(net, weight_decay=0.05, lr=0.1)
    decay, no_decay = groups
    assert {id(p) for p in decay["params"]} == {id(net.embed.weight), id(net.conv.weight), id(net.fc.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(net.conv.bias), id(net.norm.weight), id(net.norm.bias), id(net.fc.bias)
    }
    assert decay["weight_decay"] == 0.05 and decay["lr"] == 0.1
    assert no_decay["weight_decay"] == 0.0 and no_decay["always_adapt"] is False and no_decay["lr"] == 0.1
    opt = fused_optim.LAMB(groups)
    assert len(opt.param_groups) == 2


def test_name_patterns_exclude_more():
    net = Net()
    decay, no_decay = fused_optim.param_groups(net, weight_decay=0.05, exclude=["embed.*"])
    assert any(p is net.embed.weight for p in no_decay["params"])
    assert all(p is not net.embed.weight for p in decay["params"])


def test_only_patterns_and_empty_groups():
    net = nn.Linear(3, 2, bias=False)
    groups = fused_optim.param_groups(net, weight_decay=0.01)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    groups = fused_optim.param_groups(nn.Linear(3, 2), weight_decay=0.01, exclude_1d=False)
    assert len(groups) == 1 and len(groups[0]["params"]) == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid weight_decay value: -1"):
        fused_optim.param_groups(nn.Linear(2, 2), weight_decay=-1)
    with pytest.raises(ValueError, match="sets `params` and `weight_decay` itself"):
        fused_optim.param_groups(nn.Linear(2, 2), weight_decay=0.1, params=[])


def test_adaptation_really_off_for_excluded_group():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    opt = fused_optim.LARS(fused_optim.param_groups(net, weight_decay=1e-4), lr=0.1, foreach=False)
    net(torch.randn(5, 4)).sum().backward()
    bias_before = net.bias.detach().clone()
    opt.step()
    # plain SGD on the bias: w - lr * g
    torch.testing.assert_close(net.bias, bias_before - 0.1 * net.bias.grad)

"""Invalid input: a clear error, and nothing modified by the call that raises."""

import pytest
import torch
from cases import make_params

import fused_optim

LAMB_ERRORS = [
    (dict(lr=-1.0), ValueError, r"Invalid learning rate: -1.0"),
    (dict(lr=float("nan")), ValueError, r"Invalid learning rate: nan"),
    (dict(betas=(1.0, 0.999)), ValueError, r"Invalid beta parameter at index 0: 1.0"),
    (dict(betas=(0.9, -0.1)), ValueError, r"Invalid beta parameter at index 1: -0.1"),
    (dict(betas=(0.9,)), ValueError, r"Invalid betas"),
    (dict(eps=-1e-8), ValueError, r"Invalid epsilon value: -1e-08"),
    (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay value: -0.1"),
    (dict(max_grad_norm=-1.0), ValueError, r"Invalid max_grad_norm: -1.0"),
    (dict(lr=torch.tensor([0.1, 0.2])), ValueError, r"Tensor lr must be a single element"),
    (dict(fused=True, foreach=True), ValueError, r"`fused` and `foreach` cannot both be True"),
]

LARS_ERRORS = [
    (dict(lr=-0.5), ValueError, r"Invalid learning rate: -0.5"),
    (dict(momentum=-0.9), ValueError, r"Invalid momentum value: -0.9"),
    (dict(dampening=1.5), ValueError, r"Invalid dampening value: 1.5"),
    (dict(weight_decay=-1e-4), ValueError, r"Invalid weight_decay value: -0.0001"),
    (dict(trust_coeff=0.0), ValueError, r"Invalid trust_coeff value: 0.0"),
    (dict(trust_coeff=-1.0), ValueError, r"Invalid trust_coeff value: -1.0"),
    (dict(eps=-1.0), ValueError, r"Invalid epsilon value: -1.0"),
    (dict(nesterov=True), ValueError, r"Nesterov momentum requires a momentum and zero dampening"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError, r"Nesterov momentum requires"),
    (dict(fused=True, foreach=True), ValueError, r"`fused` and `foreach` cannot both be True"),
]


@pytest.mark.parametrize("kwargs,exc,msg", LAMB_ERRORS, ids=[str(e[0]) for e in LAMB_ERRORS])
def test_lamb_constructor_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fused_optim.LAMB(make_params(), **kwargs)


@pytest.mark.parametrize("kwargs,exc,msg", LARS_ERRORS, ids=[str(e[0]) for e in LARS_ERRORS])
def test_lars_constructor_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fused_optim.LARS(make_params(), **kwargs)


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
def test_bad_param_group_is_refused_and_leaves_groups_alone(cls):
    params = make_params()
    opt = cls(params[:2])
    with pytest.raises(ValueError, match="Invalid weight_decay value: -1"):
        opt.add_param_group({"params": params[2:], "weight_decay": -1})
    assert len(opt.param_groups) == 1


def test_lamb_max_grad_norm_is_global():
    params = make_params()
    with pytest.raises(ValueError, match="max_grad_norm clips the global gradient norm"):
        fused_optim.LAMB([{"params": params[:2]}, {"params": params[2:], "max_grad_norm": 5.0}])


@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
def test_complex_and_integer_params_are_refused(cls):
    with pytest.raises(ValueError, match="complex"):
        cls([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="floating-point"):
        cls([torch.zeros(3, dtype=torch.int64)])
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        cls([torch.zeros(3), 1.0])


@pytest.mark.parametrize("path", [dict(foreach=False), dict(foreach=True), dict(fused=True)], ids=str)
@pytest.mark.parametrize("cls", [fused_optim.LAMB, fused_optim.LARS], ids=lambda c: c.__name__)
def test_sparse_grad_raises_before_any_change(cls, path):
    # The sparse grad sits in the second group: the first group must not be touched either.
    params = make_params(shapes=[(4,), (5, 3)])
    before = [p.detach().clone() for p in params]
    opt = cls([{"params": params[:1]}, {"params": params[1:]}], momentum=0.9, **path) if cls is fused_optim.LARS \
        else cls([{"params": params[:1]}, {"params": params[1:]}], **path)
    params[0].grad = torch.ones(4)
    params[1].grad = torch.eye(5, 3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    for p, b in zip(params, before):
        assert torch.equal(p, b)
    assert len(opt.state) == 0


def test_functional_lars_checks_buffer_count():
    params = make_params(shapes=[(3,), (4,)])
    with pytest.raises(ValueError, match="2 params but 1 momentum buffers"):
        fused_optim.lars(params, [torch.ones(3), torch.ones(4)], [None], lr=0.1, momentum=0.9)

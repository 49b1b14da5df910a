"""Device-side reads of the multi-tensor table (see `_table`) shared by the kernels."""

import triton
import triton.language as tl


@triton.jit
def unit_of(i_u, unit_tensor_ptr, unit_slot_ptr, nslots_ptr, numel_ptr):
    """Work unit `i_u`: its tensor, its slot among that tensor's programs, the number of those, the tensor's size."""
    i_t = tl.load(unit_tensor_ptr + i_u).to(tl.int64)
    slot = tl.load(unit_slot_ptr + i_u).to(tl.int64)
    ns = tl.load(nslots_ptr + i_t).to(tl.int64)
    n = tl.load(numel_ptr + i_t)
    return i_t, slot, ns, n


@triton.jit
def tensor_norm(sq_ptr, slot_base_ptr, i_t, ns, MAX_SLOTS: tl.constexpr):
    """Tensor `i_t`'s L2 norm from its programs' partial sums of squares, reduced in a fixed order (deterministic)."""
    base = tl.load(slot_base_ptr + i_t)
    o_s = tl.arange(0, MAX_SLOTS)
    return tl.sqrt(tl.sum(tl.load(sq_ptr + base + o_s, mask=o_s < ns, other=0.0), axis=0))

"""fp32 → param dtype, rounded to nearest even, identically compiled and under the Triton interpreter."""

import triton
import triton.language as tl


@triton.jit
def round_to(x, like_ptr):
    """`x` (fp32) in the element type of `like_ptr`, rounded to nearest even."""
    if like_ptr.dtype.element_ty == tl.bfloat16:
        # triton 3.8's interpreter truncates fp32 → bf16 (2026-12): round on the bits instead, as the hardware
        # conversion does. NaN is pinned to the quiet NaN first so that rounding cannot carry it into inf.
        bits = x.to(tl.uint32, bitcast=True)
        bits = tl.where(x != x, 0x7FC00000, bits)
        bits = bits + (0x7FFF + ((bits >> 16) & 1))
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(like_ptr.dtype.element_ty)

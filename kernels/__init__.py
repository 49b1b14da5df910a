"""Triton kernels behind fused_optim's fused=True paths; installed as `fused_optim.kernels` (never top-level)."""

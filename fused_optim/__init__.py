"""Fused multi-tensor LAMB and LARS optimizers for PyTorch."""

from .lamb import LAMB, lamb
from .lars import LARS, lars
from .param_groups import param_groups

__all__ = ["LAMB", "LARS", "lamb", "lars", "param_groups"]
__version__ = "0.1.0"

import os

import torch

# Kernels run compiled on a CUDA machine and through the Triton interpreter everywhere else. The interpreter flag
# is read when @triton.jit decorates, so it must be set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

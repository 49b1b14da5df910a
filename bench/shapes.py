"""Parameter shapes of real models, built without torchvision or transformers (the GPU machine may lack them)."""

from __future__ import annotations

import math


def lenet5() -> list[tuple[int, ...]]:
    return [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 16, 5, 5), (120,), (84, 120), (84,), (10, 84), (10,)]


def resnet50() -> list[tuple[int, ...]]:
    """torchvision's resnet50: 161 tensors, 25,557,032 parameters."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            width, out = planes, planes * 4
            shapes += [(width, inplanes, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(out, width, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, inplanes, 1, 1), (out,), (out,)]
            inplanes = out
    return shapes + [(1000, 2048), (1000,)]


def bert(hidden: int, layers: int, vocab: int = 30522, positions: int = 512) -> list[tuple[int, ...]]:
    """BERT encoder with its pooler: embeddings, per layer Q/K/V/O, two LayerNorms and the FFN."""
    h, f = hidden, 4 * hidden
    shapes: list[tuple[int, ...]] = [(vocab, h), (positions, h), (2, h), (h,), (h,)]
    for _ in range(layers):
        shapes += [(h, h), (h,)] * 4 + [(h,), (h,)]
        shapes += [(f, h), (f,), (h, f), (h,), (h,), (h,)]
    return shapes + [(h, h), (h,)]


SHAPESETS = {
    "lenet5": lenet5,
    "resnet50": resnet50,
    "bert-base": lambda: bert(768, 12),
    "bert-large": lambda: bert(1024, 24),
}


def numel(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


# Bytes moved per parameter element by one optimizer step, at the two-pass bound (see kernels/lamb.py and
# kernels/lars.py), and by the single-pass references; p = param/grad bytes, state in fp32.
def bytes_per_param(op: str, param_bytes: int) -> int:
    p = param_bytes
    return {
        "lamb": 4 * p + 24,  # pass A: g, w, m, v read, m, v written; pass B: m, v, w read, w written
        "lars": 5 * p + 8,  # pass A: w, g read; pass B: w, g, b read, b, w written
        "adamw": 3 * p + 16,  # one pass: g, w, m, v read, w, m, v written
        "sgd": 3 * p + 8,  # one pass: g, w, b read, w, b written
    }[op]

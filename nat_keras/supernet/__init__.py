"""Weight-sharing supernets: the architecture is an input of every step.

- `ModelSupernet`: the plan space of one Keras model (keep / skip / none /
  cheaper ops per edge), starting from the model's weights.
- `CellSupernet`: NAT's cell space (DARTS-style cells, one (input, op)
  pair per genotype entry), the paper's 8-cell C=20 supernet by default.
- `Supernet`: the base class (arch_size, sample_arch, accuracy, extract).
- `batchnorm`: BN statistics recalibrated for one architecture.

The classes are imported on first use (a module `__getattr__`), so that
`transform`, which needs only `batchnorm` at import time, does not load the
cell supernet's modules with `import nat_keras`.

Example:
  >>> from nat_keras.supernet import ModelSupernet
  >>> supernet = ModelSupernet(model)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Supernet": "nat_keras.supernet.base",
    "CellSupernet": "nat_keras.supernet.cell_space",
    "ModelSupernet": "nat_keras.supernet.model_space",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["CellSupernet", "ModelSupernet", "Supernet"]

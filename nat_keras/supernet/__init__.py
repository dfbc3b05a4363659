"""Weight-sharing supernets: the architecture is an input of every step.

- `ModelSupernet`: the plan space of one Keras model (keep / skip / none /
  cheaper ops per edge), starting from the model's weights.
- `CellSupernet`: NAT's cell space (DARTS-style cells, one (input, op)
  pair per genotype entry), the paper's 8-cell C=20 supernet by default.
- `Supernet`: the base class (arch_size, sample_arch, accuracy, extract).
"""

from nat_keras.supernet.base import Supernet
from nat_keras.supernet.cell_space import CellSupernet
from nat_keras.supernet.model_space import ModelSupernet

__all__ = ["CellSupernet", "ModelSupernet", "Supernet"]

"""Extraction: the standalone network of one architecture, carrying the cell supernet's weights.

What `extract_network` returns is `build_network(genotype, affine=False)`
with the pools given their BN (when the supernet's `pool_bn`) and the
supernet's weights, so its inference output equals the supernet's for the
same arch. Weights go across by (cell, node, slot, op): slot s of node i
reading input j with op k gets the weights of the supernet's op k on edge
j -> i (a row of a packed layer, `packed_weights._NodeOps.row_weights`).

It preprocesses a cell input only if a non-null entry reads it; the
supernet always does, which changes no output. With loose-end concat the
supernet keeps a cell's channel count and zeroes the nodes some entry
reads, where the standalone network concatenates only the loose ends: the
layers after such a cell get the rows of the next layers' weights that
read the loose ends.

Example:
  >>> model = extract_network(supernet, supernet.sample_arch(0))
  >>> model(images)   # == supernet(images, arch=..., training=False)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from nat_keras.cells.genotype import fully_concat
from nat_keras.cells.network import build_network
from nat_keras.cells.operations import PoolBN


def extract_network(supernet: Any, arch: Any) -> keras.Model:
    """The standalone network of `arch`, carrying `supernet`'s weights.

    Args:
      supernet: a `CellSupernet` (its layers, cell specs and packed op
        layers are read, never changed).
      arch: an arch vector of the supernet.

    Example:
      >>> model = extract_network(supernet, supernet.sample_arch(0))
      >>> model.fit(...)   # fine-tune from the shared weights
    """
    genotype = supernet.arch_to_genotype(arch)
    model = build_network(
        genotype,
        num_classes=supernet.num_classes,
        input_shape=supernet.image_shape,
        channels=supernet.channels,
        num_cells=supernet.num_cells,
        stem_multiplier=supernet.stem_multiplier,
        affine=False,
        name=f"{supernet.name}_extract",
    )
    if supernet.pool_bn:
        model = _with_pool_bn(model)
    present = {layer.name for layer in model.layers}
    _copy(supernet.stem_conv, model.get_layer("stem_conv"))
    _copy(supernet.stem_bn, model.get_layer("stem_bn"))
    # Channels of each cell's output that the standalone network keeps.
    kept: list[np.ndarray | None] = [None, None]  # s0, s1 (the stem: all)
    for spec in supernet.cell_specs:
        which = "reduce" if spec.reduction else "normal"
        entries, concat = genotype.cell(which)
        for p, rows in enumerate(kept):
            name = f"cell{spec.index}_preprocess{p}"
            if name in present:
                _copy(supernet.preprocess[2 * spec.index + p], model.get_layer(name), rows=rows)
        for position, (op, source) in enumerate(entries):
            node, slot = divmod(position, 2)
            groups = spec.groups(node)
            g = next(i for i, group in enumerate(groups) if source < group.start + group.count)
            layer = supernet.node_ops(spec.index, node, g)
            if not layer.has_op(op):
                continue
            values = layer.row_weights(op, source - groups[g].start)
            target = model.get_layer(f"cell{spec.index}_node{node}_edge{slot}_{op}")
            # Weight paths are "<layer>/<sublayer>/<name>"; the keys drop "<layer>/".
            target.set_weights([values[v.path.split("/", 1)[1]] for v in target.weights])
        rows = None
        if tuple(concat) != fully_concat(supernet.num_nodes):
            c = spec.channels
            rows = np.concatenate([np.arange((n - 2) * c, (n - 1) * c) for n in concat])
        kept = [kept[1], rows]
    _copy(supernet.classifier, model.get_layer("logits"), rows=kept[1])
    return model


def _with_pool_bn(model: keras.Model) -> keras.Model:
    """`model` with an affine-free BN after every pool, as the supernet's pools have."""
    if not any(isinstance(layer, PoolBN) for layer in model.layers):
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, PoolBN):
            config = {**config, "batch_norm": True, "affine": False}
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _copy(source: keras.layers.Layer, target: keras.layers.Layer, rows: np.ndarray | None = None) -> None:
    """Copy weights between layers of the same structure.

    `rows` selects input channels of the target, where the source reads all
    of a loose-end cell's (zero-filled) channels: axis 2 of 1x1 conv kernels,
    axis 0 of dense kernels.
    """
    values = source.get_weights()
    if rows is not None:
        values = [v[:, :, rows, :] if v.ndim == 4 else v[rows] if v.ndim == 2 else v for v in values]
    target.set_weights(values)


__all__ = ["extract_network"]

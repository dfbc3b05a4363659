"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a big-endian header, then the data: two zero bytes, a type
byte (0x08 for unsigned bytes, the only type these datasets use), a byte
giving the number of dimensions, one uint32 per dimension, then the values in
row-major order. The files usually ship gzipped (`*-idx3-ubyte.gz`).
Together, type and rank make the "magic number": 2051 for images (three
dimensions: count, rows, columns) and 2049 for labels (one dimension).

Example:
  >>> write_idx("labels-idx1-ubyte.gz", np.array([3, 1, 4], np.uint8))
  >>> read_idx("labels-idx1-ubyte.gz")
  array([3, 1, 4], dtype=uint8)
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from nat_keras.errors import NatKerasError

UNSIGNED_BYTE = 0x08
_DTYPES = {UNSIGNED_BYTE: np.dtype(np.uint8)}


class IdxFormatError(NatKerasError, ValueError):
    """A file is not a well-formed IDX file."""


def read_idx(path: str | os.PathLike, *, expected_rank: int | None = None) -> np.ndarray:
    """The array an IDX file (plain or gzipped) holds.

    Args:
      path: the file; a name ending in ".gz" is read through gzip.
      expected_rank: if given, the number of dimensions the file must have
        (3 for images, 1 for labels).

    Returns:
      A numpy array of the file's type and shape.

    Raises:
      IdxFormatError: the header is malformed, the type is not unsigned
        bytes, the rank is not `expected_rank`, or the data is short or long.

    Example:
      >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape
      (10000,)
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{path}: not an IDX file (it must start with two zero bytes).")
    type_code, rank = data[2], data[3]
    if type_code not in _DTYPES:
        raise IdxFormatError(f"{path}: IDX type 0x{type_code:02x} is not supported (only unsigned bytes).")
    if expected_rank is not None and rank != expected_rank:
        raise IdxFormatError(f"{path}: expected {expected_rank} dimension(s), the header says {rank}.")
    header_size = 4 + 4 * rank
    if len(data) < header_size:
        raise IdxFormatError(f"{path}: the header is cut short.")
    shape = struct.unpack(f">{rank}I", data[4:header_size])
    dtype = _DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise IdxFormatError(
            f"{path}: the header promises {shape} values ({expected} bytes), the file holds "
            f"{len(data) - header_size} bytes of data."
        )
    return np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if `path` ends in ".gz").

    Example:
      >>> write_idx("images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise IdxFormatError(f"write_idx writes uint8 arrays, got {array.dtype}.")
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as stream:
        stream.write(header + np.ascontiguousarray(array).tobytes())

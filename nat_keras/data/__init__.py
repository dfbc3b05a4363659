"""Data NAT searches and trains on: digits, Fashion-MNIST (offline), CIFAR-10/100 and ImageNet via TFDS.

`load_splits` returns the training split divided into a supernet-weight part
(40%) and a policy part (60%), as in the paper, plus the untouched test split,
each a batched, prefetched `tf.data.Dataset` of `(float32 images, int32
labels)`. A TFDS dataset that is not prepared fails at once with the command
that prepares it, unless `download=True` (docs/design.md section 7).
Fashion-MNIST is read from TFDS when prepared, else from its original IDX
files (`data_dir`, or Debian's `dataset-fashion-mnist` package), and comes
as 32x32x3 (28x28 grey zero-padded and repeated) so that the CIFAR networks
take it; `image_size=28, channels=1` keeps it native. A dataset
of the user's own is split the same way by `split`, per example by a seeded
hash of its content, so reshuffling never mixes the parts.

Example:
  >>> from nat_keras import data
  >>> splits = data.load_splits("digits")
  >>> splits.image_shape, splits.num_classes
  ((32, 32, 3), 10)
  >>> sorted(data.DATASETS)
  ['cifar10', 'cifar100', 'digits', 'fashion_mnist', 'imagenet2012']
  >>> data.load_splits("fashion_mnist", image_size=28, channels=1).image_shape
  (28, 28, 1)
"""

from nat_keras.data.config import DataConfig
from nat_keras.data.digits import DigitsArrays, load_digits_arrays
from nat_keras.data.fashion_mnist import (
    FashionMnistArrays,
    FashionMnistNotFoundError,
    load_fashion_mnist_arrays,
)
from nat_keras.data.pipeline import PIPELINE_VERSION, Preprocessing, cutout, pad_and_random_crop
from nat_keras.data.specs import DATASETS, DatasetSpec, get_spec
from nat_keras.data.splits import NatSplits, load_splits, split, weight_mask
from nat_keras.data.tfds_source import DatasetNotPreparedError

__all__ = [
    "DATASETS",
    "PIPELINE_VERSION",
    "DataConfig",
    "DatasetNotPreparedError",
    "DatasetSpec",
    "DigitsArrays",
    "FashionMnistArrays",
    "FashionMnistNotFoundError",
    "NatSplits",
    "Preprocessing",
    "cutout",
    "get_spec",
    "load_digits_arrays",
    "load_fashion_mnist_arrays",
    "load_splits",
    "pad_and_random_crop",
    "split",
    "weight_mask",
]

"""Packaging for nat_keras.

Versions are pinned to a set seen installing and running together (see
docs/design.md section 5): TF-GNN 1.0.3 needs Keras 2 (`tf-keras`) beside Keras 3.
"""

import pathlib

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tf-keras==2.21.0",
    "tensorflow-gnn==1.0.3",
    "tensorflow-datasets==4.9.10",
    "keras-tuner[bayesian]==1.4.8",
    "absl-py>=2.1,<3",
    "tensorboard==2.21.0",
    "importlib_resources>=6",
    "scikit-learn>=1.4",
    # Pictures of plans and searches (nat_keras.plots), drawn with the Agg backend.
    "matplotlib>=3.8",
    "numpy>=1.26",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "hypothesis>=6.100",
        "ruff>=0.6",
    ],
}

setup(
    name="nat_keras",
    version="0.1.0",
    description=(
        "Neural Architecture Transformer (NAT, Guo et al. 2019) for Keras 3: "
        "make an existing network more accurate at no extra cost."
    ),
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["nat_keras", "nat_keras.*"]),
    package_data={"nat_keras": ["policy/*.pbtxt", "assets/*/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)

"""Test set-up: nat_keras first (it prepares the two Kerases), quiet TF logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nat_keras  # noqa: F401 - must come before anything touches tf.keras

"""Make TF-GNN (Keras 2) and the user's Keras 3 live in one process.

TF-GNN 1.0.3 imports only when `tf.keras` is Keras 2 (`tf-keras`), which
TensorFlow decides from TF_USE_LEGACY_KERAS the first time anything touches
`tf.keras`. `import keras` (Keras 3) ignores the variable, so setting it never
changes what the user's `import keras` gives. This runs first thing on
`import nat_keras` (docs/design.md section 5).
"""

from __future__ import annotations

import os

from nat_keras import compat


def prepare() -> None:
    """Set TF_USE_LEGACY_KERAS=1 if that is still possible, else explain.

    Raises:
      ImportError: when the variable is set to a false value, or when
        `tf.keras` was already bound to Keras 3 in this process.
    """
    value = os.environ.get(compat.LEGACY_KERAS_VAR)
    if value is not None and not compat.legacy_keras_requested():
        raise ImportError(
            f"nat_keras needs {compat.LEGACY_KERAS_VAR}=1 (TF-GNN runs on Keras 2 beside your "
            f"Keras 3 models), but it is set to {value!r}. Unset it or set it to 1 before "
            "starting Python; `import keras` still gives you Keras 3."
        )
    resolved = compat.tf_keras_resolved_to()
    if resolved is not None and resolved != "tf_keras":
        raise ImportError(
            "nat_keras must be imported before anything touches `tf.keras`: in this process "
            f"`tf.keras` is already bound to {resolved}, and TF-GNN needs it to be Keras 2. "
            "Move `import nat_keras` above the code that uses `tf.keras`, or start Python with "
            f"{compat.LEGACY_KERAS_VAR}=1 set. Your own models should use `import keras`."
        )
    if value is None:
        os.environ[compat.LEGACY_KERAS_VAR] = "1"

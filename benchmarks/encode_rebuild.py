"""Benchmark: encode + apply_plan against keras.models.clone_model.

Both run in this process on the same model; the figure that matters is the
ratio (ours / clone_model), goal <= 1.5x. clone_model makes fresh layers and
does not copy weights; apply_plan also copies every kept weight, so the ratio
charges us for that.

  python benchmarks/encode_rebuild.py --repeats=5 --models=ResNet50,DenseNet121
"""

from __future__ import annotations

import statistics
import time

import nat_keras  # first: prepares the two Kerases

# isort: split
import keras
from absl import app, flags

_MODELS = flags.DEFINE_list("models", ["ResNet50", "DenseNet121"], "keras.applications models.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement (median reported).")
_PLAN = flags.DEFINE_enum("plan", "keep_all", ["keep_all", "random"], "Which plan apply_plan gets.")


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for imports and tracing caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        keras.backend.clear_session(free_memory=False)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    del argv
    print(f"{'model':<14}{'clone_model s':>15}{'encode s':>11}{'apply_plan s':>14}{'ratio':>8}")
    for name in _MODELS.value:
        model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
        graph = nat_keras.encode(model)
        plan = (
            nat_keras.TransformPlan.keep_all(graph)
            if _PLAN.value == "keep_all"
            else nat_keras.sample_random_plan(graph, 0)
        )
        clone = _median_seconds(lambda m=model: keras.models.clone_model(m), _REPEATS.value)
        encode = _median_seconds(lambda m=model: nat_keras.encode(m), _REPEATS.value)
        ours = _median_seconds(
            lambda m=model, p=plan: nat_keras.apply_plan(m, p, graph=nat_keras.encode(m)), _REPEATS.value
        )
        print(f"{name:<14}{clone:>15.3f}{encode:>11.3f}{ours:>14.3f}{ours / clone:>7.2f}x")


if __name__ == "__main__":
    app.run(main)

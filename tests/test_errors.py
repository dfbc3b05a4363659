"""Bad input gives a nat_keras error that names the model / layer / edge and says what to do.

Also: nat_keras never mutates the user's model, and `import nat_keras` sets up
(or explains why it cannot set up) the two Kerases of docs/design.md, section 5.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
from conftest import all_layers, conv_chain, nested_model, residual_model, small_resnet

import nat_keras
from nat_keras import ops
from nat_keras.errors import ActionSpaceError, BudgetError, NatKerasError, PlanError, UnsupportedModelError
from nat_keras.graph.arch_graph import MERGE_SUM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SubclassedNet(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="my_subclassed_net")
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def _batch(model: keras.Model) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, *model.input_shape[1:])).astype("float32")


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


# ---------------------------------------------------------------------------
# (a)-(c), (j): models nat_keras cannot read.


def test_subclassed_model() -> None:
    model = SubclassedNet()
    model(np.zeros((1, 3), "float32"))  # built, but still no graph to walk
    with pytest.raises(UnsupportedModelError) as info:
        nat_keras.encode(model)
    message = str(info.value)
    assert "my_subclassed_net" in message
    assert "subclassed" in message
    assert "functional API" in message or "Sequential" in message


def test_tf_keras_model() -> None:
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))], name="legacy_net")
    with pytest.raises(UnsupportedModelError) as info:
        nat_keras.encode(model)
    message = str(info.value)
    assert "legacy_net" in message
    assert "tf.keras" in message
    assert "Keras 2" in message
    assert "import keras" in message


def test_unbuilt_sequential() -> None:
    model = keras.Sequential([keras.layers.Dense(2)], name="unbuilt_seq")
    with pytest.raises(UnsupportedModelError) as info:
        nat_keras.encode(model)
    message = str(info.value)
    assert "unbuilt_seq" in message
    assert "not built" in message
    assert "keras.Input" in message or "build(" in message


@pytest.mark.parametrize(
    "thing",
    [keras.layers.Dense(2), "resnet20", 42, None, conv_chain],
    ids=["layer", "string", "int", "none", "factory-function"],
)
def test_not_a_model(thing: object) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        nat_keras.encode(thing)
    assert type(thing).__name__ in str(info.value)
    assert "keras.Model" in str(info.value)


def test_unsupported_model_error_is_a_type_error() -> None:
    # Callers that catch TypeError (the usual "wrong kind of argument") still work.
    with pytest.raises(TypeError):
        nat_keras.encode("not a model")


def test_apply_plan_on_unsupported_model() -> None:
    plan = nat_keras.TransformPlan.keep_all(nat_keras.encode(conv_chain()))
    with pytest.raises(UnsupportedModelError):
        nat_keras.apply_plan(SubclassedNet(), plan)


# ---------------------------------------------------------------------------
# (d): Lambda layers are opaque.


def lambda_model(fn=None) -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x)
    x = keras.layers.Lambda(fn or (lambda t: t * 2.0), name="my_lambda")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="with_lambda")


def _double(t):
    return t * 2.0


def test_lambda_layer_warns_and_is_protected() -> None:
    model = lambda_model()
    with pytest.warns(UserWarning, match="my_lambda") as record:
        graph = nat_keras.encode(model)
    assert "with_lambda" in str(record[0].message)
    lambda_edges = [e for e in graph.edges if "my_lambda" in e.layers]
    assert len(lambda_edges) == 1
    edge = lambda_edges[0]
    assert edge.protected
    assert edge.actions == (ops.KEEP,)
    assert "Lambda" in edge.note
    # The ops around it stay transformable.
    assert graph.edge("c2").transformable


@keras.saving.register_keras_serializable(package="nat_keras_tests")
def _registered_double(t):
    return t * 2.0


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(None, id="python-lambda"),
        pytest.param(_double, id="def-function"),
        pytest.param(_registered_double, id="registered-function"),
    ],
)
def test_lambda_layer_keep_all_rebuilds(fn) -> None:
    model = lambda_model(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = nat_keras.encode(model)
        new_model = nat_keras.apply_plan(model, nat_keras.TransformPlan.keep_all(graph), graph=graph)
    x = _batch(model)
    np.testing.assert_allclose(_predict(new_model, x), _predict(model, x), atol=1e-6)
    assert [layer.name for layer in new_model.layers if isinstance(layer, keras.layers.Lambda)] == [
        "my_lambda"
    ]


# ---------------------------------------------------------------------------
# (e)-(i): plans that do not fit.


def test_plan_for_another_model() -> None:
    model_a, model_b = small_resnet("model_a"), conv_chain("model_b")
    plan = nat_keras.TransformPlan.keep_all(nat_keras.encode(model_a))
    with pytest.raises(PlanError) as info:
        nat_keras.apply_plan(model_b, plan)
    message = str(info.value)
    assert "'model_a'" in message and "'model_b'" in message
    assert "Make a plan for this model" in message


def test_plan_for_same_architecture_other_name() -> None:
    # The fingerprint covers the model name: a plan is tied to the model it was made for.
    plan = nat_keras.TransformPlan.keep_all(nat_keras.encode(conv_chain("first")))
    with pytest.raises(PlanError, match=r"'first'.*'second'"):
        nat_keras.apply_plan(conv_chain("second"), plan)


def test_unknown_edge() -> None:
    model = conv_chain()
    graph = nat_keras.encode(model)
    plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), {"no_such_conv": ops.SKIP})
    with pytest.raises(PlanError, match="'no_such_conv'") as info:
        nat_keras.apply_plan(model, plan)
    assert "'chain'" in str(info.value)
    with pytest.raises(PlanError, match="'no_such_conv'"):
        nat_keras.TransformPlan.from_actions(graph, {"no_such_conv": ops.SKIP})


@pytest.mark.parametrize(
    ("edge_id", "action", "why"),
    [
        ("c1", ops.NONE, None),  # its node has a single input
        ("stem", ops.SKIP, "stem"),  # protected
        ("logits", ops.NONE, "head"),  # protected
    ],
)
def test_illegal_action(edge_id: str, action: str, why: str | None) -> None:
    model = conv_chain()
    graph = nat_keras.encode(model)
    edge = graph.edge(edge_id)
    assert action not in edge.actions  # the premise of the case
    if edge_id == "c1":
        assert len(graph.in_edges(edge.dst)) == 1
    plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), {edge_id: action})
    with pytest.raises(PlanError) as info:
        nat_keras.apply_plan(model, plan)
    message = str(info.value)
    assert repr(edge_id) in message and repr(action) in message
    assert "legal actions" in message
    assert str(list(edge.actions)) in message
    if why:
        assert why in message


def test_action_outside_space() -> None:
    model = conv_chain()
    graph = nat_keras.encode(model)
    assert "sep_conv_3x3" in graph.edge("c1").actions  # legal in nat++ ...
    with pytest.raises(PlanError, match=r"'nat' action space") as info:
        nat_keras.TransformPlan.from_actions(graph, {"c1": "sep_conv_3x3"}, space="nat")
    assert "nat++" in str(info.value)
    plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), {"c1": "sep_conv_3x3"}, space="nat")
    with pytest.raises(PlanError, match="'c1'"):
        nat_keras.apply_plan(model, plan)


def test_unknown_action_and_space() -> None:
    graph = nat_keras.encode(conv_chain())
    with pytest.raises(PlanError, match="'teleport'"):
        nat_keras.TransformPlan.from_actions(graph, {"c1": "teleport"})
    # One error for an unknown action space, wherever it is asked for (a ValueError too).
    with pytest.raises(ActionSpaceError, match=r"TransformPlan: unknown action space 'nat\+\+\+'"):
        nat_keras.TransformPlan.keep_all(graph, space="nat+++")


def test_plan_removing_every_input_of_a_sum() -> None:
    model = residual_model()
    graph = nat_keras.encode(model)
    sums = [n for n in graph.nodes if n.merge == MERGE_SUM]
    assert [n.id for n in sums] == ["block_add"]
    incoming = graph.in_edges("block_add")
    regular = [e for e in incoming if e.kind != "placeholder"]
    assert len(regular) == 2 and all(ops.NONE in e.actions for e in regular)
    plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), {e.id: ops.NONE for e in regular})
    with pytest.raises(PlanError) as info:
        nat_keras.apply_plan(model, plan)
    message = str(info.value)
    assert "'block_add'" in message
    assert "no input" in message
    assert all(e.id in message for e in regular)


# ---------------------------------------------------------------------------
# (k): budgets.


def test_budget_error_has_numbers() -> None:
    model = conv_chain()
    plan = nat_keras.TransformPlan.keep_all(nat_keras.encode(model))
    params = model.count_params()
    with pytest.raises(BudgetError) as info:
        nat_keras.apply_plan(model, plan, check_budget=nat_keras.Budget(params_ratio=0.5))
    message = str(info.value)
    assert "'chain'" in message
    assert f"{params:,} params" in message  # what the plan costs
    assert f"{params // 2:,} params" in message  # what the budget allows
    assert "Budget" in message
    # The default budget allows the unchanged model.
    nat_keras.apply_plan(model, plan, check_budget=nat_keras.Budget())


def test_errors_share_a_base_class() -> None:
    for cls in (UnsupportedModelError, PlanError, BudgetError, ActionSpaceError):
        assert issubclass(cls, NatKerasError)


# ---------------------------------------------------------------------------
# (l): import order and TF_USE_LEGACY_KERAS, each in a fresh interpreter.

_IMPORT_CASES = {
    "legacy-var-false": (
        {"TF_USE_LEGACY_KERAS": "0"},
        "import nat_keras",
    ),
    "tf-keras-touched-first": (
        {},
        "import tensorflow as tf\ntf.keras.layers\nimport nat_keras",
    ),
    "var-unset-works": (
        {},
        """
        import os
        import nat_keras
        assert os.environ["TF_USE_LEGACY_KERAS"] == "1", os.environ.get("TF_USE_LEGACY_KERAS")
        import keras
        assert keras.__version__.startswith("3"), keras.__version__
        import tensorflow_gnn
        import tensorflow as tf
        assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
        print("OK", keras.__version__, tensorflow_gnn.__version__)
        """,
    ),
}


@pytest.fixture(scope="module")
def import_runs() -> dict[str, subprocess.CompletedProcess]:
    """Run every import case at once (each interpreter spends seconds importing TF)."""
    procs = {}
    for case, (env_extra, code) in _IMPORT_CASES.items():
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **env_extra})
        procs[case] = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        results[case] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def _import_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode != 0, run.stdout
    lines = [line for line in run.stderr.splitlines() if line.startswith("ImportError")]
    assert lines, run.stderr[-2000:]
    return lines[-1]


def test_import_with_legacy_var_false(import_runs) -> None:
    message = _import_error(import_runs["legacy-var-false"])
    assert "TF_USE_LEGACY_KERAS" in message
    assert "'0'" in message
    assert re.search(r"Unset it or set it to 1", message)


def test_import_after_tf_keras_was_touched(import_runs) -> None:
    message = _import_error(import_runs["tf-keras-touched-first"])
    assert "before anything touches `tf.keras`" in message
    assert "Move `import nat_keras` above" in message


def test_import_with_var_unset_sets_it(import_runs) -> None:
    run = import_runs["var-unset-works"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("OK 3.")


# ---------------------------------------------------------------------------
# (m): the user's model is never mutated.


def _snapshot(model: keras.Model) -> tuple:
    return (
        model.get_config(),
        [w.copy() for w in model.get_weights()],
        {layer.name: len(layer._inbound_nodes) for layer in all_layers(model)},
        model.count_params(),
    )


@pytest.mark.parametrize("factory", [conv_chain, residual_model, nested_model, lambda: small_resnet("r8")])
def test_model_is_not_mutated(factory) -> None:
    model = factory()
    config, weights, inbound, params = _snapshot(model)
    graph = nat_keras.encode(model)
    plans = [
        nat_keras.TransformPlan.keep_all(graph),
        nat_keras.sample_random_plan(graph, 0, space="nat"),
        nat_keras.sample_random_plan(graph, 1, space="nat++", change_prob=1.0),
    ]
    for plan in plans:
        nat_keras.apply_plan(model, plan)
        nat_keras.apply_plan(model, plan, graph=graph)
    nat_keras.cost(model)
    after_config, after_weights, after_inbound, after_params = _snapshot(model)
    assert after_config == config
    assert after_inbound == inbound
    assert after_params == params
    assert len(after_weights) == len(weights)
    for old, new in zip(weights, after_weights):
        np.testing.assert_array_equal(old, new)
    # And the model still runs as before.
    assert np.all(np.isfinite(_predict(model, _batch(model))))

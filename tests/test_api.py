"""The public API: flat, lazy where it is heavy, and one error type per kind of bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nat_keras
from nat_keras import errors, ops


def test_config_classes_and_policy_at_the_top_level():
    from nat_keras.policy.policy import Policy
    from nat_keras.search.loop import SearchConfig
    from nat_keras.supernet.trainer import SupernetConfig

    assert nat_keras.Policy is Policy
    assert nat_keras.SearchConfig is SearchConfig
    assert nat_keras.SupernetConfig is SupernetConfig
    assert {"Policy", "SearchConfig", "SupernetConfig"} <= set(dir(nat_keras))
    with pytest.raises(AttributeError, match="no attribute 'Polcy'"):
        nat_keras.Polcy  # noqa: B018


def test_import_does_not_load_tf_gnn():
    # TF-GNN and the policy load on first use only, so `import nat_keras` stays fast.
    code = "import sys, nat_keras; print('tensorflow_gnn' in sys.modules, 'nat_keras.policy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_public_error_is_a_nat_keras_error_and_a_builtin_one():
    for cls in (
        errors.PlanError,
        errors.BudgetError,
        errors.ActionSpaceError,
        errors.ConfigError,
    ):
        assert issubclass(cls, errors.NatKerasError) and issubclass(cls, ValueError)
    assert issubclass(errors.UnsupportedModelError, TypeError)
    assert issubclass(errors.UnknownNameError, KeyError)


def test_unknown_action_space_is_one_error_everywhere():
    graph = nat_keras.encode(nat_keras.models.resnet(depth=8, input_shape=(8, 8, 3)))
    attempts = {
        "ops.check_space": lambda: ops.check_space("nas"),
        "TransformPlan": lambda: nat_keras.TransformPlan(graph.name, graph.fingerprint(), {}, "nas"),
        "sample_random_plan": lambda: nat_keras.sample_random_plan(graph, 0, space="nas"),
        "Policy": lambda: nat_keras.Policy(space="nas"),
    }
    for where, attempt in attempts.items():
        with pytest.raises(errors.ActionSpaceError, match="unknown action space 'nas'"):
            attempt()
        try:
            attempt()
        except ValueError:  # `except ValueError` keeps working
            pass
        else:
            pytest.fail(f"{where} accepted an unknown action space")


def test_bad_values_raise_config_errors():
    with pytest.raises(errors.ConfigError, match="params_ratio"):
        nat_keras.Budget(params_ratio=0)
    with pytest.raises(errors.ConfigError, match="6n \\+ 2"):
        nat_keras.models.resnet(depth=21)
    with pytest.raises(errors.ConfigError, match="Unknown dataset"):
        nat_keras.data.get_spec("mnist-digits")


def test_graph_lookups_name_the_graph():
    graph = nat_keras.encode(nat_keras.models.resnet(depth=8, input_shape=(8, 8, 3)))
    with pytest.raises(errors.UnknownNameError, match=f"ArchGraph {graph.name!r} has no edge 'nope'"):
        graph.edge("nope")
    with pytest.raises(KeyError):
        graph.node("nope")

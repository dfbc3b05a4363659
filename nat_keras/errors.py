"""Errors raised by nat_keras.

Every error names the model, layer or edge at fault and says what to do, so a
user can act on the message without reading our code. Each also subclasses
the built-in error it refines (ValueError for bad values, TypeError for
unsupported types), so `except ValueError` keeps working.

Example:
  >>> try:
  ...     nat_keras.TransformPlan(fingerprint="", actions={}, space="nas")
  ... except ValueError as error:   # an ActionSpaceError
  ...     print(error)
"""

from __future__ import annotations


class NatKerasError(Exception):
    """Base class of every error nat_keras raises on bad input."""


class UnsupportedModelError(NatKerasError, TypeError):
    """The model cannot be encoded (subclassed, Keras 2, unbuilt, ...)."""


class PlanError(NatKerasError, ValueError):
    """A TransformPlan does not fit the ArchGraph or model it is applied to."""


class BudgetError(NatKerasError, ValueError):
    """A plan would make the model cost more than its budget allows."""


class ActionSpaceError(NatKerasError, ValueError):
    """An action space other than "nat" or "nat++" was asked for."""


class ConfigError(NatKerasError, ValueError):
    """An option or config value is out of range or of the wrong kind."""


class UnknownNameError(NatKerasError, KeyError):
    """A node, edge or layer name that the graph or model does not have."""

    def __str__(self) -> str:
        # KeyError quotes its message; this one is a sentence.
        return str(self.args[0]) if self.args else ""

"""Errors raised by nat_keras.

Every error names the model, layer or edge at fault and says what to do, so a
user can act on the message without reading our code.
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

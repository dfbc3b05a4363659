"""NAT's search: environments (rewards), the alternating loop, and derivation."""

from nat_keras.search.environment import Environment, KnownRewardEnvironment, SupernetEnvironment
from nat_keras.search.loop import (
    CHOOSE_VERSION,
    DERIVE_VERSION,
    NATSearch,
    SearchConfig,
    SearchHistory,
    derive,
    input_plan,
)

__all__ = [
    "CHOOSE_VERSION",
    "DERIVE_VERSION",
    "Environment",
    "KnownRewardEnvironment",
    "NATSearch",
    "SearchConfig",
    "SearchHistory",
    "SupernetEnvironment",
    "derive",
    "input_plan",
]

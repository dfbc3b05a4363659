"""NAT's search: environments (rewards), the alternating loop, and derivation."""

from nat_keras.search.environment import Environment, KnownRewardEnvironment, SupernetEnvironment
from nat_keras.search.loop import DERIVE_VERSION, NATSearch, SearchConfig, SearchHistory, derive

__all__ = [
    "DERIVE_VERSION",
    "Environment",
    "KnownRewardEnvironment",
    "NATSearch",
    "SearchConfig",
    "SearchHistory",
    "SupernetEnvironment",
    "derive",
]

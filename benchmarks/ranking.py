"""Shared by the reward-fidelity benchmarks: the pools of plans and the rank statistics.

A sibling module without flags (like `rows.py`), so benchmarks/reward_fidelity.py
(the model plan space) and benchmarks/cell_fidelity.py (the cell space) can
both import it.

Example:
  >>> correlations([0.1, 0.2, 0.3], [0.5, 0.7, 0.6])["n"]
  3
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from nat_keras.plan import TransformPlan, sample_random_plan


def plan_pool(graph: Any, config: Mapping[str, Any]) -> list[tuple[float, TransformPlan]]:
    """(change probability, plan): the keep-all plan first, then distinct random plans.

    Change probabilities are spread geometrically from `config["min_change"]`
    to `config["max_change"]`, so plans changing one or two edges are as well
    represented as plans changing half of them; `config["plans"]` plans in
    all, in `config["space"]`, drawn from `config["seed"]`.
    """
    keep = TransformPlan.keep_all(graph, space=config["space"])
    pool = [(0.0, keep)]
    seen = {keep}
    probs = np.geomspace(config["min_change"], config["max_change"], config["plans"] - 1)
    draw = itertools.count()
    for prob in probs:
        while True:  # a keep-all or repeated draw is drawn again, from the next seed
            plan = sample_random_plan(
                graph, (config["seed"], next(draw)), space=config["space"], change_prob=float(prob)
            )
            if plan not in seen:
                break
        seen.add(plan)
        pool.append((float(prob), plan))
    return pool


def correlations(scores: Sequence[float], accuracies: Sequence[float]) -> dict[str, float]:
    """Kendall's tau and Spearman's rho with p-values (NaN with fewer than 3 points)."""
    nan = {"n": len(scores), "tau": math.nan, "tau_p": math.nan, "rho": math.nan, "rho_p": math.nan}
    if len(scores) < 3 or len(set(scores)) < 2 or len(set(accuracies)) < 2:
        return nan
    tau = stats.kendalltau(scores, accuracies)
    rho = stats.spearmanr(scores, accuracies)
    return {
        "n": len(scores),
        "tau": float(tau.statistic),
        "tau_p": float(tau.pvalue),
        "rho": float(rho.statistic),
        "rho_p": float(rho.pvalue),
    }


def signed(value: float) -> str:
    """A correlation for a table: sign and two decimals, "-" where it is undefined (NaN).

    Example:
      >>> signed(0.5), signed(math.nan)
      ('+0.50', '-')
    """
    return "-" if math.isnan(value) else f"{value:+.2f}"


def top_beats_source(
    scores: Sequence[float], accuracies: Sequence[float], source_accuracy: float, *, size: int, seed: int
) -> dict[str, float]:
    """How often the best-scored of `size` random candidates trains above the source.

    All candidate sets are counted when there are few, else 2,000 random
    ones. Ties in score go to the earlier plan, like a stable sort.
    """
    n = len(scores)
    if n == 0:
        return {"sets": 0, "beats": math.nan, "beats_or_ties": math.nan}
    size = min(size, n)
    if math.comb(n, size) <= 2_000:
        sets = [list(c) for c in itertools.combinations(range(n), size)]
    else:
        rng = np.random.default_rng(seed)
        sets = [list(rng.choice(n, size=size, replace=False)) for _ in range(2_000)]
    beats = ties = 0
    for members in sets:
        best = max(members, key=lambda i: (scores[i], -i))
        beats += accuracies[best] > source_accuracy
        ties += accuracies[best] == source_accuracy
    return {"sets": len(sets), "beats": beats / len(sets), "beats_or_ties": (beats + ties) / len(sets)}

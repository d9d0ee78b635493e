"""A vectorised pandas implementation of one Great Expectations metric the suite uses.

GX 1.x computes ``column_pair_values.in_set`` (behind
``expect_column_pair_values_to_be_in_set``, the suite's ``label`` / ``label_normal``
consistency rule) on pandas with ``DataFrame.iterrows``: about 0.1 ms a row, i.e. 1-2 s of
one core for each file of the public data (11,178 records) and more than the rest of the
suite together. :func:`register` replaces that pandas implementation with one that
evaluates each *distinct* pair of values once, exactly as GX does it (a missing value is
``None``, then the pair is looked up in the set), and broadcasts the answer to the rows. The
expectation, its parameters, its result (counts, unexpected rows and their indices) and the
SQL / Spark implementations are unchanged; only the time differs.
"""

from __future__ import annotations

import logging
from typing import Any

_REGISTERED = False
#: GX logs a warning when a metric provider is replaced; this replacement is deliberate.
_REGISTRY_LOGGER = "great_expectations.expectations.registry"


def pair_in_set(column_a: Any, column_b: Any, value_pairs_set: Any) -> Any:
    """Row-wise ``(a, b) in value_pairs_set`` with missing values as None (GX's semantics),
    computed once per distinct pair: a boolean Series on the columns' index."""
    import numpy as np
    import pandas as pd

    if value_pairs_set is None:  # vacuously true, as in GX
        return np.ones(len(column_a), dtype=np.bool_)
    allowed = {(x, y) for x, y in value_pairs_set}
    frame = pd.DataFrame({"A": column_a, "B": column_b})
    groups = frame.groupby(["A", "B"], dropna=False, sort=False).ngroup().to_numpy()
    if groups.size == 0:
        return pd.Series([], index=frame.index, dtype=bool)
    first = np.unique(groups, return_index=True)[1]  # one row of each distinct pair
    answers = np.zeros(first.size, dtype=bool)
    for k, row in enumerate(first.tolist()):
        a, b = frame["A"].iat[row], frame["B"].iat[row]
        answers[k] = (None if pd.isnull(a) else a, None if pd.isnull(b) else b) in allowed
    return pd.Series(answers[groups], index=frame.index)


def register() -> None:
    """Install the vectorised pandas implementation (idempotent; imports GX)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.metrics.column_pair_map_metrics import (
        column_pair_values_in_set as builtin,
    )
    from great_expectations.expectations.metrics.map_metric_provider import (
        column_pair_condition_partial,
    )

    registry_log = logging.getLogger(_REGISTRY_LOGGER)
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:

        class FastColumnPairValuesInSet(builtin.ColumnPairValuesInSet):
            """``column_pair_values.in_set`` on pandas, once per distinct pair."""

            @column_pair_condition_partial(engine=PandasExecutionEngine)
            def _pandas(cls, column_A, column_B, **kwargs):  # noqa: N803 - GX's names
                return pair_in_set(column_A, column_B, kwargs.get("value_pairs_set"))

    finally:
        registry_log.setLevel(level)
    _REGISTERED = True

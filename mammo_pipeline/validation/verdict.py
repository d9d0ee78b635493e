"""Turn a Great Expectations validation result into reasons a person can read.

Each failed expectation becomes a :class:`FailedExpectation` with the rule in words (the
expectation's ``description`` in the suite), what was observed, what was expected (the
expectation's own kwargs, with suite parameters already substituted by GX), how many records
broke it and a few examples with their record index. Nothing here restates a rule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mammo_pipeline.validation.result import FailedExpectation

if TYPE_CHECKING:
    import pandas as pd

#: Examples listed per failed expectation (all are counted).
MAX_EXAMPLES = 10
_NOT_EXPECTED = {
    "column",
    "column_A",
    "column_B",
    "row_condition",
    "condition_parser",
    "result_format",
    "catch_exceptions",
    "meta",
    "description",
    "batch_id",
    "ignore_row_if",
    "mostly",
    "notes",
    "severity",
    "windows",
}


def _plain(value: Any) -> Any:
    """JSON-friendly scalars: whole floats as ints, NaN as None, tuples as lists."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def _expected(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {k: _plain(v) for k, v in kwargs.items() if k not in _NOT_EXPECTED and v is not None}
    if kind.endswith("_to_be_unique"):
        out["unique"] = True
    elif kind.endswith("_to_not_be_null"):
        out["null"] = False
    if kwargs.get("mostly") not in (None, 1, 1.0):
        out["mostly"] = kwargs["mostly"]
    if kwargs.get("row_condition") is not None:
        out["where"] = _condition_words(kwargs["row_condition"])
    return out


def _condition_words(condition: Any) -> str:
    """'parse_ok == True' for a GX comparison condition (object or dict form)."""
    if isinstance(condition, dict):
        column = (condition.get("column") or {}).get("name")
        operator, parameter = condition.get("operator"), condition.get("parameter")
    else:
        column = getattr(getattr(condition, "column", None), "name", None)
        operator = getattr(condition, "operator", None)
        parameter = getattr(condition, "parameter", None)
    if column is None or operator is None:
        return str(condition)
    return f"{column} {getattr(operator, 'value', operator)} {parameter}"


def _expected_words(expected: dict[str, Any]) -> str:
    if "value_set" in expected:
        if expected["value_set"] == [""]:  # a column that names what a record matched
            return "no match"
        return f"values in {expected['value_set']}"
    if "value_pairs_set" in expected:
        return f"pairs in {expected['value_pairs_set']}"
    if "min_value" in expected or "max_value" in expected:
        lo, hi = expected.get("min_value"), expected.get("max_value")
        if lo is not None and hi is not None:
            return f"{lo}" if lo == hi else f"between {lo} and {hi}"
        return f"at least {lo}" if lo is not None else f"at most {hi}"
    if "column_set" in expected:
        return f"columns {expected['column_set']}"
    if expected.get("unique"):
        return "unique values"
    if expected.get("null") is False:
        return "no missing values"
    return ", ".join(f"{k}={v}" for k, v in expected.items()) or "the rule to hold"


def _examples(result: dict[str, Any], frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    indices = result.get("partial_unexpected_index_list") or []
    values = result.get("partial_unexpected_list") or []
    examples = []
    for i, value in list(zip(indices, values, strict=False))[:MAX_EXAMPLES]:
        index = i.get("record_index") if isinstance(i, dict) else i
        example: dict[str, Any] = {"record": _plain(index), "value": _plain(value)}
        if frame is not None and "problem" in frame.columns and index in frame.index:
            problem = frame.at[index, "problem"]
            if isinstance(problem, str) and problem:
                example["problem"] = problem
        examples.append(example)
    if not examples and values:
        examples = [{"value": _plain(v)} for v in values[:MAX_EXAMPLES]]
    return examples


def explain_failure(evr: Any, frame: pd.DataFrame | None = None) -> FailedExpectation:
    """One failed GX ``ExpectationValidationResult`` in words and numbers."""
    config = evr.expectation_config
    kwargs = dict(config.kwargs)
    kind = config.type
    description = config.description or kind.replace("_", " ")
    column = kwargs.get("column")
    if column is None and "column_A" in kwargs:
        column = f"{kwargs['column_A']}, {kwargs['column_B']}"
    expected = _expected(kind, kwargs)
    result = dict(evr.result or {})
    info = evr.exception_info or {}
    if isinstance(info, dict) and info.get("raised_exception"):
        message = info.get("exception_message") or "unknown error"
        return FailedExpectation(
            expectation=kind,
            column=column,
            description=description,
            message=f"{description}: could not be evaluated ({message})",
            expected=expected,
        )
    unexpected = result.get("unexpected_count")
    elements = result.get("element_count")
    observed = _plain(result.get("observed_value"))
    examples = _examples(result, frame)
    if unexpected is not None:
        shown = ", ".join(
            f"record {e['record']} = {e['value']}"
            + (f" ({e['problem']})" if "problem" in e else "")
            for e in examples[:3]
            if "record" in e
        )
        message = (
            f"{description}: {unexpected} of {elements} record(s) fail "
            f"(expected {_expected_words(expected)})" + (f"; e.g. {shown}" if shown else "")
        )
    else:
        if kind == "expect_table_columns_to_match_set" and isinstance(observed, list):
            wanted = set(expected.get("column_set", []))
            missing = sorted(wanted - set(observed))
            extra = sorted(set(observed) - wanted)
            observed = {"columns": observed, "missing": missing, "unexpected": extra}
        shown_observed = "no value (no records)" if observed is None else observed
        message = f"{description}: observed {shown_observed}, expected {_expected_words(expected)}"
    return FailedExpectation(
        expectation=kind,
        column=column,
        description=description,
        message=message,
        observed=observed,
        expected=expected,
        unexpected_count=unexpected,
        element_count=elements,
        examples=examples,
    )


def explain(results: list[Any], frame: pd.DataFrame | None = None) -> list[FailedExpectation]:
    """Every failed expectation of a validation, in suite order."""
    return [explain_failure(r, frame) for r in results if not r.success]

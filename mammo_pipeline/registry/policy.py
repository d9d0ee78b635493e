"""The promotion policy: the deployment's settings, which one run may only tighten.

Thresholds (``min_precision``, ``min_recall``), the non-regression ``regression_tolerance``,
``require_approval`` and ``gate_lower_bound`` come from the settings (``MAMMO_*`` or the
config file), i.e. from whoever operates the deployment. A DAG trigger or a CLI option may ask
for a stricter gate (higher thresholds, a smaller tolerance, approval required, lower bounds
required); a looser value is refused with a message naming the setting, never applied.
The effective policy is recorded on every gated version (tag ``gate_policy``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError

#: policy field -> True when a larger value is stricter.
STRICTER_WHEN_LARGER: dict[str, bool] = {
    "min_precision": True,
    "min_recall": True,
    "regression_tolerance": False,
    "require_approval": True,
    "gate_lower_bound": True,
}


@dataclass(frozen=True)
class GatePolicy:
    min_precision: float
    min_recall: float
    regression_tolerance: float
    require_approval: bool
    gate_lower_bound: bool
    confidence: float
    n_resamples: int
    seed: int

    @classmethod
    def from_settings(cls, s: Settings) -> GatePolicy:
        return cls(
            min_precision=float(s.min_precision),
            min_recall=float(s.min_recall),
            regression_tolerance=float(s.regression_tolerance),
            require_approval=bool(s.require_approval),
            gate_lower_bound=bool(s.gate_lower_bound),
            confidence=float(s.gate_confidence),
            n_resamples=int(s.gate_bootstrap_resamples),
            seed=int(s.gate_bootstrap_seed),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        bound = "Wilson lower bound" if self.gate_lower_bound else "point estimate"
        approval = "required" if self.require_approval else "not required"
        return (
            f"precision >= {self.min_precision:g} and recall >= {self.min_recall:g} "
            f"({bound}); no loss beyond {self.regression_tolerance:g} vs champion and "
            f"baseline (lower bound of the {self.confidence:.0%} interval, paired bootstrap "
            f"x{self.n_resamples}); approval {approval}"
        )


def tightened(policy: GatePolicy, requested: Mapping[str, Any] | None) -> GatePolicy:
    """``policy`` with the ``requested`` values (None = keep) that are at least as strict;
    a looser one raises :class:`ConfigError` naming the setting and the deployment's value."""
    values = policy.to_dict()
    for name, value in (requested or {}).items():
        if value is None:
            continue
        if name not in STRICTER_WHEN_LARGER:
            raise ConfigError(f"{name} is not a gate policy setting")
        current = values[name]
        new = bool(value) if isinstance(current, bool) else float(value)
        looser = new < current if STRICTER_WHEN_LARGER[name] else new > current
        if looser:
            raise ConfigError(
                f"{name}={value} would loosen the deployment's gate policy "
                f"({name}={current}): a run may only tighten it; change MAMMO_{name.upper()} "
                "in the deployment's settings instead"
            )
        values[name] = new
    return GatePolicy(**values)

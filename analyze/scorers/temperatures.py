"""The temperatures the command lines accept, and the parsing of ``--temps``."""

from __future__ import annotations

import math

#: temperatures the CLIs accept (docs/temperature.md "Range"): the metrics equal those of
#: a float64 evaluation of the formulas over this range (tested at both ends, for ERFNet
#: logits and EoMT class scores). Below it float64 itself saturates: RbA's tanh(s / T) of
#: EoMT class scores (s <= 1) reaches 1.0 at s / T ~ 19, so ties depend on the last bit of
#: the tanh implementation, and MSP / MaxEntropy underflow for logit gaps above ~700 T.
T_RANGE = (0.1, 1000.0)


def check_temperature(t: float, name: str | None = None) -> float:
    """``t`` as a float when it lies in :data:`T_RANGE`, else ``ValueError`` saying why
    (naming the temperature as ``name``, default ``repr(t)``)."""
    t = float(t)
    name = repr(t) if name is None else name
    lo, hi = T_RANGE
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature {name} must be a finite number > 0")
    if not lo <= t <= hi:
        raise ValueError(f"temperature {name} is outside [{lo:g}, {hi:g}], the range where the scores are tested to "
                         "give the metrics of a float64 evaluation (beyond it x / T saturates float64: scores tie)")
    return t


def parse_temperatures(spec: str) -> tuple[float, ...]:
    """Temperatures from ``'0.5,0.75,1.1'``: sorted, unique, always including 1.0.

    An empty ``spec`` gives ``(1.0,)``. Raises ``ValueError`` naming the first item that is
    not a number in :data:`T_RANGE`.
    """
    temps = {1.0}
    if spec.strip():
        for item in spec.split(","):
            try:
                t = float(item)
            except ValueError:
                raise ValueError(f"temperature {item.strip()!r} is not a number (in {spec!r})") from None
            temps.add(check_temperature(t, f"{item.strip()!r} (in {spec!r})"))
    return tuple(sorted(temps))

"""The registry written out for people: the ``--scorers`` help text and the Markdown catalogue of
docs/scorers.md (a test holds the page to it). Reads :data:`analyze.scorers.registry.SCORERS`
and the installed plugins' help line; no torch.
"""

from __future__ import annotations

from analyze.scorers import plugin_load
from analyze.scorers.registry import NEEDS, SCORERS, T_ENTRIES, fmt_value


def help_text() -> str:
    """The ``--scorers`` help: every scorer with what it needs beyond x, and the parameter syntax."""
    parts = []
    for s in SCORERS.values():
        extra = [NEEDS[n].split(" (")[0] for n in s.needs if n in ("id_stats", "flip")]
        kinds = "" if len(s.kinds) == 2 else " EoMT only"
        shown = [f"{p.name}={'all' if p.default is None else fmt_value(p.default)}" for p in s.param_specs]
        params = f" [{', '.join(shown)}]" if shown else ""
        parts.append(s.base + params + (f" ({', '.join(filter(None, [kinds.strip()] + extra))})" if extra or kinds else ""))
    return ("'all' (default: every scorer the cache and the options allow, saying which are left out) or a comma "
            "list of: " + "; ".join(parts) + ". Parameters: gen:gamma=0.2,m=10 (a key=value item continues the "
            "scorer before it). " + plugin_load.help_line(SCORERS))


def catalogue() -> list[str]:
    """The scorer catalogue as Markdown table lines (a test holds docs/scorers.md to it)."""
    lines = ["| scorer | formula (higher = more anomalous) | follows | needs | T enters | parameters |",
             "|---|---|---|---|---|---|"]
    for s in SCORERS.values():
        needs = ", ".join(NEEDS[n] for n in s.needs)
        if s.kinds == ("query",):
            needs += "; EoMT only"
        params = ", ".join(f"`{p.name}` {fmt_value(p.default) if p.default is not None else '(all)'}" for p in s.param_specs)
        lines.append(f"| `{s.base}` | `{s.formula}` | {s.source} | {needs} | {T_ENTRIES[s.temperature]} | "
                     f"{params or '-'} |")
    return lines

"""Why the winner won: the winner among the finished trials (validation metric, then validation log-loss, then
fewer seconds), why each other trial lost or did not run, and the record ``RUN/decisions.json`` and the report
keep (the same dict, under ``"auto"`` in metrics.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transferkit.atomic import atomic_write_bytes
from transferkit.automl.search import Outcome
from transferkit.runs.folders import AUTO_DECISIONS as DECISIONS_FILE

FORMAT = "transferkit-auto-decisions-1"


def choose(outcomes: list[Outcome], metric: str) -> Outcome | None:
    """The best finished trial on validation (never on test: trials never read it)."""
    eligible = [o for o in outcomes if o.value(metric) is not None]
    if not eligible:
        return None
    return max(eligible, key=lambda o: (o.value(metric), -o.scores.get("log_loss", float("inf")), -o.seconds))


def why_lost(outcome: Outcome, winner: Outcome, metric: str) -> str:
    if outcome is winner:
        return "chosen: the best validation " + metric.replace("_", "-")
    value, best = outcome.value(metric), winner.value(metric)
    if value is None:
        return outcome.note or outcome.state
    if value < best:
        return f"val {metric} {value:.4f} < {best:.4f}"
    if outcome.scores.get("log_loss", 0) > winner.scores.get("log_loss", 0):
        return f"same val {metric}, higher val log-loss"
    return f"same val {metric} and log-loss, slower ({outcome.seconds:.0f} s)"


def record(*, budget: float, used: float, metric: str, facts: dict[str, Any], ranking: list[dict[str, Any]],
           cost: dict[str, Any] | None, notes: list[str], outcomes: list[Outcome], winner: Outcome | None,
           study: str | None, dry_run: bool = False) -> dict[str, Any]:
    trials = []
    for outcome in outcomes:
        row = outcome.to_dict()
        if winner is not None:
            row["why"] = why_lost(outcome, winner, metric)
        trials.append(row)
    return {"format": FORMAT, "dry_run": dry_run, "budget_seconds": round(budget, 1), "used_seconds": round(used, 1),
            "metric": metric, "facts": facts, "ranking": ranking, "cost": cost, "notes": notes, "trials": trials,
            "winner": None if winner is None else {"key": winner.trial.key, "settings": winner.trial.settings,
                                                   "val": winner.scores, "final_fit": winner.note},
            "study": study,
            "chosen_on": "validation only: trials never read the test split; it is scored once, after the choice"}


def write_decisions(folder: Path, decisions: dict[str, Any]) -> Path:
    path = Path(folder) / DECISIONS_FILE
    atomic_write_bytes(path, (json.dumps(decisions, indent=2, default=str) + "\n").encode())
    return path

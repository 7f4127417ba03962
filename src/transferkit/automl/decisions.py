"""Why the winner won: the winner among the finished trials (the first trial of the plan, which runs the cheaper
and simpler ones first, whose validation metric is within one standard error of the best; Breiman's one-standard-
error rule, so a difference of a few validation items does not choose), why each other trial lost or did not run, and the record ``RUN/decisions.json`` and the report
keep (the same dict, under ``"auto"`` in metrics.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transferkit.atomic import atomic_write_bytes
from transferkit.automl.search import Outcome
from transferkit.runs.folders import AUTO_DECISIONS as DECISIONS_FILE

FORMAT = "transferkit-auto-decisions-1"


def standard_error(value: float, n_val: int) -> float:
    """A validation score's binomial standard error over ``n_val`` items (macro-F1 read like an accuracy)."""
    return math.sqrt(max(value * (1.0 - value), 0.0) / max(n_val, 1))


def choose(outcomes: list[Outcome], metric: str, n_val: int) -> Outcome | None:
    """The first finished trial in plan order within one standard error of the best on validation (never on
    test: trials never read it); among equals, validation log-loss, then fewer seconds."""
    eligible = [o for o in outcomes if o.value(metric) is not None]
    if not eligible:
        return None
    best = max(eligible, key=lambda o: (o.value(metric), -o.scores.get("log_loss", float("inf")), -o.seconds))
    floor = best.value(metric) - standard_error(best.value(metric), n_val)
    return next(o for o in eligible if o is best or o.value(metric) > floor)


def why_lost(outcome: Outcome, winner: Outcome, metric: str, n_val: int) -> str:
    value, best = outcome.value(metric), winner.value(metric)
    if outcome is winner:
        return "chosen: the best validation " + metric.replace("_", "-") + " or within one standard error of it, " \
               "and earliest in the plan"
    if value is None:
        return outcome.note or outcome.state
    if value > best:
        return (f"val {metric} {value:.4f} > {best:.4f}, but by less than one standard error "
                f"({standard_error(value, n_val):.4f}): the simpler, earlier trial is kept")
    if value < best:
        return f"val {metric} {value:.4f} < {best:.4f}"
    if outcome.scores.get("log_loss", 0) > winner.scores.get("log_loss", 0):
        return f"same val {metric}, higher val log-loss"
    return f"same val {metric} and log-loss, slower ({outcome.seconds:.0f} s)"


def why_lost_on(outcome: Outcome, winner: Outcome, objective: str) -> str:
    """Why a trial lost where a label-free score (``objective``, higher is better) chose."""
    value, best = outcome.value(objective), winner.value(objective)
    if outcome is winner:
        return f"chosen: the highest {objective}"
    return outcome.note or outcome.state if value is None else f"{objective} {value:.4f} < {best:.4f}"


def record(*, budget: float, used: float, metric: str, n_val: int, facts: dict[str, Any],
           ranking: list[dict[str, Any]],
           cost: dict[str, Any] | None, notes: list[str], outcomes: list[Outcome], winner: Outcome | None,
           study: str | None, dry_run: bool = False, objective: str | None = None) -> dict[str, Any]:
    """The decisions; ``objective``: a label-free score that chose instead of validation ``metric``."""
    trials = []
    for outcome in outcomes:
        row = outcome.to_dict()
        if winner is not None:
            row["why"] = why_lost_on(outcome, winner, objective) if objective else why_lost(outcome, winner, metric,
                                                                                             n_val)
        trials.append(row)
    return {"format": FORMAT, "dry_run": dry_run, "budget_seconds": round(budget, 1), "used_seconds": round(used, 1),
            "metric": metric, "objective": objective, "val_items": n_val, "facts": facts, "ranking": ranking,
            "cost": cost, "notes": notes,
            "trials": trials,
            "winner": None if winner is None else {"key": winner.trial.key, "settings": winner.trial.settings,
                                                   "val": winner.scores, "final_fit": winner.note},
            "study": study,
            "chosen_on": (f"{objective}, which reads no target label" if objective else "validation only") +
                         ": trials never read the test split; it is scored once, after the choice"}


def write_decisions(folder: Path, decisions: dict[str, Any]) -> Path:
    path = Path(folder) / DECISIONS_FILE
    atomic_write_bytes(path, (json.dumps(decisions, indent=2, default=str) + "\n").encode())
    return path

"""The trials that fit the budget, cheapest and strongest baseline first: a linear probe per kept backbone (on
cached features: seconds), then fine-tunes of the best backbone (``gradual`` at the default and a higher
learning rate, LoRA, ``last-k``, full ``finetune``) at the number of epochs the remaining budget allows each,
every estimate from the measured step time (cost.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from transferkit.automl.candidates import Ranked
from transferkit.automl.cost import Cost
from transferkit.modalities import modality_named

PROBE_FIT_SECONDS = 3.0  # the L-BFGS head along its L2 path, on cached features
PROBE_FIT_PER_ITEM = 0.005  # and per item (reading its features, the path): trec's 5,452 texts took ~30 s here
SAFETY = 1.15  # a trial is started only when its estimate with this margin fits what is left
# The fine-tunes tried and their epochs are the data's modality's (Modality.defaults: finetunes, epochs).


@dataclass
class Trial:
    """One planned trial: a stable key (the study knows finished trials by it), its settings, its estimate."""

    key: str
    settings: dict[str, Any]
    estimate: float
    why: str
    kind: str = "probe"  # "probe" | "finetune" | "adapt"

    @property
    def trains_backbone(self) -> bool:
        """A fine-tune (plain or adapting): epochs the deadline watches, an estimate the measured ones correct,
        and a winner whose engine is exported when saved (a probe reads cached features: none of that)."""
        return self.kind != "probe"

    @property
    def pruned(self) -> bool:
        """Each epoch's validation score reaches the median pruner: not an adapting trial's, which keeps every
        epoch (source accuracy is no guide to the target) and is chosen without target labels."""
        return self.kind == "finetune"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "settings": self.settings, "estimate_seconds": round(self.estimate, 1),
                "tries": self.why}


@dataclass
class Plan:
    trials: list[Trial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def estimate(self) -> float:
        return sum(t.estimate for t in self.trials)


def probe_trials(ranked: Sequence[Ranked], n_items: int, ranked_items: int, weigh: bool) -> list[Trial]:
    """A probe per kept backbone; its features for the items ranking left out are extracted at the rate measured.
    ``weigh``: imbalanced classes, so the best backbone's probe is tried with class weights too."""
    trials = []
    fit = PROBE_FIT_SECONDS + PROBE_FIT_PER_ITEM * n_items
    for row in ranked:
        if not row.kept:
            continue
        extract = (row.per_item or 0.0) * max(0, n_items - ranked_items)
        trials.append(Trial(f"probe/{row.name}", {"backbone": row.name, "strategy": "linear-probe"},
                            extract + fit, "linear probe on cached features: cheap, a strong baseline"))
    if weigh and trials:
        first = trials[0]
        trials.insert(1, Trial(f"{first.key}/class_weights=auto", {**first.settings, "class_weights": "auto"}, fit,
                               "the same probe with classes weighted by inverse frequency (imbalanced data)"))
    return trials


def finetune_options(kind: str, given: dict[str, Any]) -> list[tuple[str, str, float | None, str]]:
    """The modality's fine-tunes that the given settings leave distinct."""
    options = [o for o in modality_named(kind).defaults.finetunes if "strategy" not in given
               or o[0] == given["strategy"]]
    if "lr" in given or "adapter" in given:  # one setting fixed: variants that differ only in it are the same trial
        seen: set[tuple[str, str]] = set()
        options = [o for o in options if (o[0], given.get("adapter", o[1])) not in seen
                   and not seen.add((o[0], given.get("adapter", o[1])))]
    return options


def finetune_trials(kind: str, cost: Cost, n_train: int, n_val: int, seconds: float, given: dict[str, Any],
                    fixed_settings: dict[str, Any]) -> tuple[list[Trial], str]:
    """As many fine-tunes as fit ``seconds``, each at the epochs it can afford; and a note on what was left out."""
    defaults = modality_named(kind).defaults  # the modality's own fine-tunes and epochs
    options = finetune_options(kind, given)
    if not options:
        return [], ""
    epoch = cost.epoch_seconds(n_train, n_val)
    least, preferred, most = defaults.epochs
    fixed = given.get("epochs")
    floors = (fixed,) if fixed else (preferred, least)
    freeze = int(given.get("freeze_epochs", defaults.training.get("freeze_epochs", 0)))
    counts = range(len(options), 0, -1)
    # variants first, each at the preferred epochs or more; at a larger input bought for small images (BiT-HyperRule
    # fixes one recipe and sizes its schedule) depth first: the most promising fine-tune as long as the budget
    # allows, variants only beside it at as many epochs. Measured on CIFAR-10 (Lite1 gradual, 128 px): val 0.831,
    # 0.856, 0.862 after epochs 2-4, while two variants at 3 epochs each would fit where one fits 6
    tries = ([(n, fixed or most) for n in counts] + [(1, f) for f in floors] if cost.image_size
             else [(n, f) for f in floors for n in counts])
    chosen: tuple[int, int] | None = None
    for n, floor in tries:
        epochs = min(cost.affordable_epochs(o[0], freeze, seconds / n / SAFETY, n_train, n_val, fixed or most)
                     for o in options[:n])
        if epochs >= floor:
            chosen = (n, epochs)
            break
    if chosen is None:
        return [], (f"no fine-tuning: one epoch of {cost.backbone} takes ~{epoch:.0f} s here and the budget leaves "
                    f"{seconds:.0f} s for training")
    n, epochs = chosen
    trials = []
    for strategy, adapter, lr, why in options[:n]:
        settings: dict[str, Any] = {"backbone": cost.backbone, "strategy": strategy, "adapter": adapter,
                                    "epochs": epochs, "lr": lr, **cost.settings}
        settings = {**{k: v for k, v in settings.items() if v is not None and k not in given}, **fixed_settings}
        if strategy == "gradual" and epochs <= freeze and "freeze_epochs" not in given:
            settings["freeze_epochs"] = 0  # one epoch: the probe's head is the head-only phase's start, train it all
        key = "/".join(f"{k}={settings.get(k, given.get(k))}" for k in ("backbone", "strategy", "adapter", "lr",
                                                                         "epochs"))
        key += f"/image_size={cost.image_size}" if cost.image_size else ""
        estimate = cost.trial_seconds(strategy, epochs, settings.get("freeze_epochs", freeze), n_train, n_val)
        trials.append(Trial(key, settings, estimate, why, "finetune"))
    left = len(options) - n
    note = f"{left} fine-tuning variant(s) left out: they do not fit the budget at {epochs} epoch(s)" if left else ""
    return trials, note


def affords(plan: Plan, kind: str, given: dict[str, Any]) -> bool:
    """The plan trains a fine-tune at the modality's preferred epochs or more: what a larger input size must leave
    to be worth its cost."""
    preferred = given.get("epochs", modality_named(kind).defaults.epochs[1])
    return any(t.kind == "finetune" and t.settings.get("epochs", 0) >= preferred for t in plan.trials)


def make_plan(kind: str, ranked: Sequence[Ranked], cost: Cost | None, n_train: int, n_val: int, ranked_items: int,
              seconds: float, given: dict[str, Any], tuned: dict[str, Any], why_not: str = "",
              weigh: bool = False) -> Plan:
    """Probes, then the fine-tunes that fit what the probes leave of ``seconds``; ``tuned``: the settings every
    fine-tune takes (the user's and the data's fine-tuning settings, which a probe would refuse)."""
    plan = Plan()
    if given.get("strategy", "linear-probe") == "linear-probe":
        plan.trials += probe_trials(ranked, n_train + n_val, ranked_items, weigh and "class_weights" not in given)
    if cost is None:
        plan.notes.append(why_not or "no fine-tuning: no training step was measured")
        return plan
    trials, note = finetune_trials(kind, cost, n_train, n_val, seconds - plan.estimate * SAFETY, given, tuned)
    plan.trials += trials
    if note:
        plan.notes.append(note)
    return plan

"""The kinds of item an exclusions file names (``audit --exclude-kinds``): no NumPy here, the CLI's help reads it."""

from __future__ import annotations

from typing import Any, Sequence

from transferkit.errors import TransferkitError, arg

# The kinds of item an exclusions file can name (audit --exclude-kinds), and why each would go
EXCLUSION_KINDS = {
    "label": "a label confident learning flags",
    "doubtful": "a label the probe doubts, not sure enough to flag",
    "conflicting": "both copies of a pair with two labels",
    "duplicate": "the later copy of a duplicate within a split",
    "leak": "the train (or val) copy of an item that is also in a later split",
    "blank": "a blank image", "unreadable": "an item that cannot be read", "empty": "an empty text",
}
# What harms training, the default: a wrong or doubtful label, a pair that teaches both, an item with nothing in
# it. A leak's training copy is a correct example (its harm is to the test score, which it inflates: the page
# lists it, and the cure is taking the test copy out), and a second copy only weighs one item twice. Measured
# (CIFAR-10, 5% flipped, seeds 10-14 pooled, bench/audit.py): training without the default kinds won back +0.25
# [+0.07, +0.43] points of the 0.25 the noise cost, without every kind (100 leaks' copies more a seed) +0.29
# [+0.12, +0.47]: no difference the probe's spread from fit to fit can show, so the principle decides.
DEFAULT_EXCLUDED = ("label", "doubtful", "conflicting", "blank", "unreadable", "empty")


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as given, each one of EXCLUSION_KINDS (else one line naming them)."""
    unknown = sorted(set(kinds) - set(EXCLUSION_KINDS))
    if unknown or not kinds:
        given = f"{arg('exclude_kinds', ','.join(unknown))}: not a kind of exclusion" if unknown else \
            f"{arg('exclude_kinds')} names no kind"
        raise TransferkitError(f"{given}; choose from {', '.join(EXCLUSION_KINDS)}")
    return tuple(kinds)


def excluded(result: dict[str, Any], kinds: Sequence[str] = DEFAULT_EXCLUDED) -> list[str]:
    """The items an exclusions file of these ``kinds`` names, each once, in the audit's order."""
    chosen = check_kinds(kinds)
    return list(dict.fromkeys(e["item"] for e in result["exclusions"] if e["kind"] in chosen))

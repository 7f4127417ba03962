"""Bad-input cases of issue 23 (area: adaptbounds), gathered into tests/test_bad_inputs.py's corpus."""

from __future__ import annotations

from corpus_cases import Case

CASES: list[Case] = []

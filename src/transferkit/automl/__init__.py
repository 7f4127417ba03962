"""``transferkit auto``: the best model a time budget allows, chosen on validation and explained.

facts.py reads the data and derives what it settles; candidates.py ranks the backbones on cached features;
cost.py times a training step before any trial is planned; plan.py turns both into trials that fit the
budget; search.py runs them as an Optuna study kept in the run folder; decisions.py records why the winner won;
run.py holds it together (:func:`auto`, :class:`AutoClassifier`), with steps.py's pieces that adapting.py (a
target domain: domain-adaptation trials chosen by info-max) shares.
"""

"""``transferkit tune``: Optuna searches over a run's settings, scored on validation data only.

* :mod:`~transferkit.tuning.space`: the search spaces as objects (``probe``: head settings on cached features;
  ``finetune``: short fine-tunes), each dimension a :class:`~transferkit.config.RunConfig` field it sets;
* :mod:`~transferkit.tuning.base`: the error, the optuna check, what trials record (no optuna import);
* :mod:`~transferkit.tuning.storage`: the study's database (a killed ``tune`` resumes) and its pruners;
* :mod:`~transferkit.tuning.objective`: one trial's validation accuracy (the probe on features extracted once;
  a fine-tune through the ordinary estimator, never reading the test split);
* :mod:`~transferkit.tuning.prune`: the ``optuna-prune`` training callback that reports validation curves to the
  trial and stops pruned ones;
* :mod:`~transferkit.tuning.workers`: several workers on one study (the total of trials they share, a dead
  worker's trial, the one final fit);
* :mod:`~transferkit.tuning.study`: the whole search, and the best trial re-fitted as a normal run folder.

Only :mod:`~transferkit.tuning.space` and :mod:`~transferkit.tuning.base` are free of optuna and numpy: the
CLI imports them at start-up.
"""

"""Choosing a backbone before training: transferability scores on cached features, and a recommendation.

``transferkit rank`` extracts (or reads from the feature cache) each candidate backbone's features for the
labelled data once, then scores them with numpy and scipy alone:

* :mod:`~transferkit.selection.evidence`: LogME, the maximum evidence of a Bayesian linear model (You et al. 2021);
* :mod:`~transferkit.selection.hscore`: the shrinkage-regularised H-score (Ibrahim et al. 2022);
* :mod:`~transferkit.selection.source`: NCE and LEEP from the pretrained model's own classifier, where it has one;
* :mod:`~transferkit.selection.crossval`: cross-validated kNN (cosine) and linear-probe accuracy;
* :mod:`~transferkit.selection.linalg`: the singular vectors they share, through the smaller Gram matrix;
* :mod:`~transferkit.selection.recommend`: the backbone and the strategy to try first, with its reasons;
* :mod:`~transferkit.selection.candidates`: the data, the backbones, their features through the cache and their
  source classifiers;
* :mod:`~transferkit.selection.rank`: the whole ranking, with the seconds each score took.

The score modules import nothing of torch; neither does ranking once features and source heads are cached.
"""

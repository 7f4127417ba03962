"""Domain adaptation, the application: fit on a labelled source, adapt to an unlabelled target folder, choose
among candidates without target labels (``transferkit adapt``, ``train --target``).

* estimator.py   ``DomainAdaptClassifier``: an image classifier whose fine-tune gets the target images as its
                 unlabelled stream and a bottleneck head (both passed explicitly to ``fit``)
* experiment.py  ``adapt``: candidates (loss terms x seeds) fitted, saved as they finish, and one chosen
* selection.py   the label-free criteria that choose (criteria.py: their names, numpy-free, for ``--help``)

The loss terms themselves are plug-ins (methods/domain/, registered in plugins.py); this package is above
estimators/ and imports them, never the other way round.
"""

"""The registries of the training loop's three seams. A new method is a new module plus one line here.

* adapters decide which parameters exist and which of them train (train/adapters.py);
* loss terms add to the objective (train/losses.py; cross-entropy is always the first term);
* callbacks react to the loop's events (train/callbacks.py; checkpointing, early stop and Ctrl-C are built in).
"""

from __future__ import annotations

from transferkit.registry import Registry

ADAPTERS = Registry("adapter", {
    "full": "transferkit.train.adapters:FullAdapter",
    "bitfit": "transferkit.train.adapters:BitFitAdapter",
})

LOSS_TERMS = Registry("method", {})

CALLBACKS = Registry("callback", {})

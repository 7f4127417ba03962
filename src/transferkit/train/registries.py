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
    "lora": "transferkit.methods.peft_adapters:LoraAdapter",
    "ia3": "transferkit.methods.peft_adapters:IA3Adapter",
})

# unsupervised domain adaptation on the unlabelled target stream (methods/domain/); named apart for the help
# texts of `adapt` and `train --target`
SOURCE_ONLY = "source-only"  # `adapt`'s baseline candidate: no term, the same network and bottleneck
DOMAIN_TERMS = {
    "coral": "transferkit.methods.domain.coral:Coral",
    "mmd": "transferkit.methods.domain.mmd:MultiKernelMMD",
    "dann": "transferkit.methods.domain.dann:DANN",
    "cdan": "transferkit.methods.domain.cdan:CDAN",
    "pseudo-label": "transferkit.methods.domain.pseudo_label:PseudoLabel",
}

LOSS_TERMS = Registry("method", {
    # keep what the source task knew; learn from a bigger model (methods/)
    "l2sp": "transferkit.methods.l2sp:L2SP",
    "lwf": "transferkit.methods.lwf:LearningWithoutForgetting",
    "distill": "transferkit.methods.distill:Distillation",
    **DOMAIN_TERMS,
})

CALLBACKS = Registry("callback", {
    "tensorboard": "transferkit.train.tensorboard:TensorBoardLogger",  # scalars per epoch, watched live
    "optuna-prune": "transferkit.tuning.prune:OptunaPrune",  # a tune trial's validation curve; pruned trials stop
})

"""The registries of the training loop's three seams (torch-free, beside registry.py, so config.py and ``--help``
read them without importing the loop). A new method is a new module plus one line here.

* adapters decide which parameters exist and which of them train (train/adapters.py);
* loss terms add to the objective (train/losses.py; cross-entropy is always the first term);
* callbacks react to the loop's events (train/callbacks.py; checkpointing, early stop and Ctrl-C are built in).
"""

from __future__ import annotations

from transferkit.bounds import FLAG, REQUIRED_TEXT, TEXT, Int, Real
from transferkit.registry import Registry, plugin

# Every option of a built-in part, with its type and range (checked when a spec is parsed, before any work);
# a test holds these names equal to each part's constructor parameters. Sizes stop well short of what
# exhausts memory: LoRA r=1024 on every target is already larger than most backbones.
WEIGHT = Real(0, 1000)  # a loss term's share of the objective (0: computed, not trained on)
TEMPERATURE = Real(0, 100, open_low=True)
SHARE = Real(0, 1)
HIDDEN = Int(1, 8192)  # a discriminator's width: hidden x hidden weights
GAMMA = Real(0, 100)
PROMPT_TOKENS = Int(1, 512)  # prompt / prefix / visual prompt vectors (each is read at every step)

ADAPTERS = Registry("adapter", {
    "full": plugin("transferkit.train.adapters:FullAdapter"),
    "bitfit": plugin("transferkit.train.adapters:BitFitAdapter"),
    "lora": plugin("transferkit.methods.peft_adapters:LoraAdapter", r=Int(1, 1024),
                   alpha=Real(0, 10000, open_low=True), dropout=Real(0, 1, open_high=True), targets=TEXT),
    "ia3": plugin("transferkit.methods.peft_adapters:IA3Adapter", targets=TEXT),
    "prompt": plugin("transferkit.methods.prompts:PromptTuning", tokens=PROMPT_TOKENS),
    "prefix": plugin("transferkit.methods.prompts:PrefixTuning", tokens=PROMPT_TOKENS),
    "vpt": plugin("transferkit.methods.visual_prompts:VisualPromptTuning", tokens=PROMPT_TOKENS, deep=FLAG),
})

# unsupervised domain adaptation on the unlabelled target stream (methods/domain/); named apart for the help
# texts of `adapt` and `train --target`
SOURCE_ONLY = "source-only"  # `adapt`'s baseline candidate: no term, the same network and bottleneck
BOTTLENECK = Int(0, 16384)  # the width the terms align (0: none); Lite0's 1280 features x 16384 is 84 M weights
DOMAIN_TERMS = {
    "coral": plugin("transferkit.methods.domain.coral:Coral", weight=WEIGHT),
    "mmd": plugin("transferkit.methods.domain.mmd:MultiKernelMMD", weight=WEIGHT),
    "dann": plugin("transferkit.methods.domain.dann:DANN", weight=WEIGHT, hidden=HIDDEN, gamma=GAMMA),
    "cdan": plugin("transferkit.methods.domain.cdan:CDAN", weight=WEIGHT, entropy=FLAG, hidden=HIDDEN, gamma=GAMMA,
                   random_dim=Int(1, 16384)),
    "pseudo-label": plugin("transferkit.methods.domain.pseudo_label:PseudoLabel", weight=WEIGHT, threshold=SHARE,
                           warmup=Int(0, 10000)),
}

LOSS_TERMS = Registry("method", {
    # keep what the source task knew; learn from a bigger model (methods/)
    "l2sp": plugin("transferkit.methods.l2sp:L2SP", alpha=Real(0, 1000), beta=Real(0, 1000), weight=WEIGHT),
    "lwf": plugin("transferkit.methods.lwf:LearningWithoutForgetting", alpha=SHARE, temperature=TEMPERATURE),
    "distill": plugin("transferkit.methods.distill:Distillation", teacher=REQUIRED_TEXT, temperature=TEMPERATURE,
                      alpha=SHARE, features=Real(0, 1000)),
    **DOMAIN_TERMS,
})

CALLBACKS = Registry("callback", {
    # scalars per epoch, watched live
    "tensorboard": plugin("transferkit.train.tensorboard:TensorBoardLogger", dir=TEXT),
    # a tune trial's validation curve; pruned trials stop
    "optuna-prune": plugin("transferkit.tuning.prune:OptunaPrune", storage=REQUIRED_TEXT, study=REQUIRED_TEXT,
                           trial=Int(0, 10**9, required=True), pruner=TEXT),
    # auto's time budget: no epoch starts that would end past it
    "deadline": plugin("transferkit.automl.deadline:Deadline", at=Real(0, 1e11, required=True)),
})

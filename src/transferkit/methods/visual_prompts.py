"""Visual prompt tuning (VPT, Jia et al. 2022) for timm ViT-family backbones: ``vpt:tokens=N,deep=true``.

N learned tokens join the sequence after the class (and register) tokens, once the patches are embedded and
positioned; ``deep`` (the paper's better variant) gives every transformer block its own N tokens in place of
what the previous block made of them, ``deep=false`` (shallow) reads them at the first block only. After the
last block the prompt positions are dropped, so the final norm and the backbone's own pooling (class token,
average of patches, attention pooling) read what they always did. Only the prompts and the head train.

peft has no visual prompt: its prompt-learning configs drive transformers language models through
``PeftModel``; a timm ViT takes these tokens through three forward hooks on its blocks, written here, which
keep timm's parameter names (strategies' block groups, the run's model) and trace into one exported graph.
Backbones without tokens (CNNs: the default efficientnet_lite0) are refused in one line.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from transferkit.errors import TrainingError
from transferkit.methods.prompts import PromptAdapter, has_tokens


class VisualPrompts(nn.Module):
    """(blocks or 1, tokens, width) prompt tokens; ``start``: where they sit (after the class/register tokens)."""

    def __init__(self, layers: int, tokens: int, width: int, start: int, deep: bool) -> None:
        super().__init__()
        self.start, self.tokens, self.deep = start, tokens, deep
        self.vectors = nn.Parameter(torch.zeros(layers, tokens, width))

    def initialise(self, patch_pixels: int) -> None:
        # VPT's initialisation: Xavier-uniform over the patch projection's fan-in and the width
        bound = math.sqrt(6.0 / float(3 * patch_pixels + self.vectors.shape[-1]))
        nn.init.uniform_(self.vectors, -bound, bound)

    def layer(self, index: int, like: torch.Tensor) -> torch.Tensor:
        return self.vectors[index].to(like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1)

    def insert(self, block: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (torch.cat([x[:, :self.start], self.layer(0, x), x[:, self.start:]], dim=1), *args[1:])

    def replace(self, index: int, block: nn.Module, args: tuple) -> tuple:
        x = args[0]
        end = self.start + self.tokens
        return (torch.cat([x[:, :self.start], self.layer(index, x), x[:, end:]], dim=1), *args[1:])

    def drop(self, block: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return torch.cat([output[:, :self.start], output[:, self.start + self.tokens:]], dim=1)


def token_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's transformer blocks, or a one-line refusal for a backbone without tokens."""
    blocks = getattr(backbone, "blocks", None)
    if not (hasattr(backbone, "patch_embed") and hasattr(backbone, "num_prefix_tokens")
            and isinstance(blocks, nn.Sequential) and len(blocks)):
        raise TrainingError(f"adapter vpt: backbone {type(backbone).__name__} has no patch tokens (a CNN, or not a "
                            "timm ViT); visual prompts need a ViT-family timm backbone (timm:vit_*, deit_*); "
                            "on this one use --adapter lora, ia3 or bitfit")
    return list(blocks)


class VisualPromptTuning(PromptAdapter):
    """VPT on a timm ViT: ``tokens`` prompt tokens, at every block when ``deep``."""

    name = "vpt"
    module = "visual_prompt"

    def __init__(self, tokens: int = 10, deep: bool = True) -> None:
        super().__init__(tokens)
        self.deep = bool(deep)

    def options(self) -> dict[str, object]:
        return {"tokens": self.tokens, "deep": self.deep}

    def held(self, module: nn.Module) -> dict[str, object]:
        return {"tokens": int(module.tokens), "deep": bool(module.deep)}

    def add(self, backbone: nn.Module, initialise: bool) -> None:
        blocks = token_blocks(backbone)
        prompts = VisualPrompts(len(blocks) if self.deep else 1, self.tokens, int(backbone.embed_dim),
                                int(backbone.num_prefix_tokens), self.deep)
        if initialise:
            prompts.initialise(math.prod(getattr(backbone.patch_embed, "patch_size", (16, 16))))
        backbone.add_module(self.module, prompts)
        blocks[0].register_forward_pre_hook(prompts.insert)
        if self.deep:
            for index, block in enumerate(blocks[1:], start=1):
                block.register_forward_pre_hook(partial(prompts.replace, index))
        blocks[-1].register_forward_hook(prompts.drop)

    def expected(self, shapes: dict[str, list[int]]) -> dict[str, str]:
        name = f"backbone.{self.module}.vectors"
        shape = shapes.get(name)
        why = has_tokens(shape[1:] if shape else None, self.tokens, 2)
        if not why and shape and not self.deep and shape[0] != 1:
            why = f"has prompts for {shape[0]} blocks, but deep=false keeps one set"
        return {name: why}

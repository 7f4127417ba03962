"""Prompt tuning for text encoders: learned vectors the frozen encoder reads, trained with the new head.

* ``prompt:tokens=N`` (Lester et al. 2021): N vectors prepended to the encoder's input embeddings.
* ``prefix:tokens=N`` (P-tuning v2, Liu et al. 2022; prefix tuning, Li & Liang 2021): N learned keys and
  values prepended to every attention layer's own, the deep variant that closes the gap to fine-tuning on
  small encoders where input prompts fall behind.

The vectors live in peft's prompt-learning modules (``PromptEmbedding``, ``PrefixEncoder``, built from its
configs, with its vocabulary-sampling initialisation); they are wired into the encoder here by forward hooks.
peft's ``prefix_projection`` (P-tuning v2's MLP reparameterisation) is left off: 512 wide, as in P-tuning v2, it
trains 2.6M parameters on MiniLM (11%, against a 1% budget), and a 32-wide one gained nothing on validation.
Why not ``get_peft_model``: its prompt-learning ``PeftModel`` takes over the model's forward (our pooled
encoder calls the transformers model itself), feeds prefixes as a ``past_key_values`` cache (which shifts BERT's
position ids and does not trace into one ONNX/TorchScript graph) and leaves the prompt positions in the hidden
states our mean pooling averages. Hooks keep the encoder's own parameter names, so the run's model is the
encoder plus one module (``soft_prompt.*`` / ``prefix.*``), which a loaded run re-adds (:meth:`rebuild`).

A prompt cannot be merged into weights: the saved model, its engine and every export carry it.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from transferkit.errors import TrainingError
from transferkit.train.adapters import Adapter, AdapterWeights


class PromptAdapter(Adapter):
    """What prompt adapters share: one module added to the backbone under :attr:`module`; only it (and the
    head) trains, and :meth:`saved` keeps it; options are the token count (bounds in plugins.py)."""

    module: ClassVar[str] = ""  # the attribute the adapter adds to the backbone

    def __init__(self, tokens: int = 10) -> None:
        self.tokens = int(tokens)

    def options(self) -> dict[str, Any]:
        return {"tokens": self.tokens}

    def attach(self, model: nn.Module) -> nn.Module:
        held = getattr(model.backbone, self.module, None)
        if held is None:
            self.add(model.backbone, initialise=True)
        elif self.held(held) != self.options():  # a parent run's prompt (--from): trained further, not doubled
            given = ",".join(f"{k}={v}" for k, v in self.held(held).items()).lower()
            raise TrainingError(f"adapter {self.name}: the run this continues (--from) holds a {self.name} with "
                                f"{given}; pass --adapter {self.name}:{given} to train it further")
        return model

    def held(self, module: nn.Module) -> dict[str, Any]:
        """The options a module :meth:`add` made was made with (peft's prompt modules: their embedding's rows)."""
        return {"tokens": int(module.embedding.num_embeddings)}

    def rebuild(self, backbone: nn.Module) -> None:
        self.add(backbone, initialise=False)

    def add(self, backbone: nn.Module, initialise: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def trains(self, name: str, parameter: nn.Parameter) -> bool:
        return name.startswith(f"{self.module}.")

    def saved(self, model: nn.Module, statistics: bool = False) -> AdapterWeights:
        return AdapterWeights.of(self.trained_tensors(model, statistics), {"adapter": self.name, **self.options()})

    def expected(self, shapes: dict[str, list[int]]) -> dict[str, str]:
        """name -> why its shape is wrong (or "" when it fits), for each tensor the adapter needs: peft's prompt
        modules hold one [tokens, width] embedding."""
        name = f"backbone.{self.module}.embedding.weight"
        return {name: has_tokens(shapes.get(name), self.tokens, 2)}

    def check_saved(self, shapes: dict[str, list[int]]) -> str | None:
        own = {k: v for k, v in shapes.items() if k.startswith(f"backbone.{self.module}.")}
        problems = [f"{name} {why}" for name, why in self.expected(own).items() if why]
        unknown = sorted(set(own) - set(self.expected(own)))
        if unknown:
            problems.append(f"{unknown[0]} is not a tensor of adapter {self.name}")
        return problems[0] if problems else None

    def load(self, model: nn.Module, tensors: dict[str, Any]) -> None:
        missing = [k for k in self.expected({}) if k not in tensors]
        if missing:
            raise TrainingError(f"adapter file lacks {missing[0]}, which adapter {self.name} needs")
        super().load(model, tensors)


def has_tokens(shape: list[int] | None, tokens: int, dims: int) -> str:
    """Why a tensor of ``shape`` is not one with ``tokens`` rows and ``dims`` dimensions ("" when it is)."""
    if shape is None:
        return "is missing"
    if len(shape) != dims or shape[0] != tokens:
        return f"has shape {shape}, not {tokens} tokens"
    return ""


# ----------------------------------------------------------------------------------------------------------
# prompt: vectors before the input embeddings
# ----------------------------------------------------------------------------------------------------------
def text_encoder(backbone: nn.Module, adapter: str) -> Any:
    """The transformers encoder's config, or a one-line refusal naming what the adapter needs."""
    config = getattr(backbone, "config", None)
    if config is None or not hasattr(backbone, "get_input_embeddings"):
        raise TrainingError(f"adapter {adapter}: this backbone is not a transformers text encoder (a CNN or timm "
                            "model has no token embeddings); use it with a text backbone such as all-MiniLM-L6-v2, "
                            "or --adapter vpt on a ViT")
    if getattr(config, "position_embedding_type", None) != "absolute":
        raise TrainingError(f"adapter {adapter}: needs a BERT-style encoder with absolute positions "
                            f"(all-MiniLM-L6-v2, BERT); this one is {getattr(config, 'model_type', '?')!r}")
    return config


def prepend_prompt(prompt: nn.Module, tokens: int, encoder: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """The encoder's inputs with the prompt before the text: the text keeps its own positions (the prompt's
    are all 0: its vectors absorb a constant), and the mask and token types grow by the prompt."""
    ids, mask = kwargs.pop("input_ids"), kwargs["attention_mask"]
    words = encoder.get_input_embeddings()(ids)
    indices = torch.arange(tokens, device=ids.device)
    soft = prompt(indices).to(words.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
    prefix = torch.ones_like(ids[:, :1]).expand(-1, tokens)
    positions = torch.cumsum(torch.ones_like(ids), dim=1) - 1
    kwargs.update(inputs_embeds=torch.cat([soft, words], dim=1), attention_mask=torch.cat([prefix, mask], dim=1),
                  position_ids=torch.cat([prefix * 0, positions], dim=1),
                  token_type_ids=torch.cat([prefix * 0, ids * 0], dim=1))
    return args, kwargs


def drop_prompt(tokens: int, encoder: nn.Module, args: tuple, output: Any) -> Any:
    """The encoder's hidden states without the prompt's positions: pooling reads the text's tokens only."""
    output.last_hidden_state = output.last_hidden_state[:, tokens:]
    if getattr(output, "hidden_states", None) is not None:
        output.hidden_states = tuple(h[:, tokens:] for h in output.hidden_states)
    return output


class PromptTuning(PromptAdapter):
    """Prompt tuning: ``tokens`` vectors before the text's embeddings, started from sampled vocabulary
    embeddings (Lester et al.'s best initialisation without class labels)."""

    name = "prompt"
    module = "soft_prompt"
    # Validation accuracy, MiniLM gradual, 2 epochs of 1600 rows, seed 0, trec / rt_polarity: LR 3e-2 0.868 /
    # 0.758, 1e-1 0.873 / 0.758, 3e-1 0.878 / 0.725 (Lester et al.'s 0.3 is Adafactor's, over 30k steps).
    lr = 1e-1

    def add(self, backbone: nn.Module, initialise: bool) -> None:
        from peft import PromptEmbedding, PromptTuningConfig

        config = text_encoder(backbone, self.name)
        settings = PromptTuningConfig(num_virtual_tokens=self.tokens, token_dim=config.hidden_size,
                                      num_transformer_submodules=1, task_type="FEATURE_EXTRACTION",
                                      prompt_tuning_init="SAMPLE_VOCAB" if initialise else "RANDOM")
        prompt = PromptEmbedding(settings, backbone.get_input_embeddings())
        backbone.add_module(self.module, prompt)
        backbone.register_forward_pre_hook(partial(prepend_prompt, prompt, self.tokens), with_kwargs=True)
        backbone.register_forward_hook(partial(drop_prompt, self.tokens))


# ----------------------------------------------------------------------------------------------------------
# prefix: keys and values before every attention layer's
# ----------------------------------------------------------------------------------------------------------
def attention_layers(backbone: nn.Module, adapter: str) -> list[nn.Module]:
    """The encoder's self-attention modules (BERT-style: ``key`` and ``value`` linear layers), input first."""
    text_encoder(backbone, adapter)
    found = [m for m in backbone.modules()
             if isinstance(getattr(m, "key", None), nn.Linear) and isinstance(getattr(m, "value", None), nn.Linear)]
    if not found:
        raise TrainingError(f"adapter {adapter}: this encoder has no BERT-style attention (key and value layers) "
                            "to prefix; use --adapter prompt or lora")
    return found


def prepend_state(prefix: nn.Module, layer: int, part: int, linear: nn.Module, args: tuple,
                  output: torch.Tensor) -> torch.Tensor:
    """A key (part 0) or value (1) projection's output with the layer's learned ones before it."""
    weight = prefix.embedding.weight
    tokens, width = weight.shape[0], output.shape[-1]
    states = weight.view(tokens, -1, 2, width)[:, layer, part].to(output.dtype)
    return torch.cat([states.unsqueeze(0).expand(output.shape[0], -1, -1), output], dim=1)


def widen_mask(tokens: int, attention: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """The layer's additive attention mask (or a boolean one) with every prefix position attended to."""
    mask = kwargs.get("attention_mask")
    if mask is not None:
        opened = True if mask.dtype == torch.bool else 0.0
        kwargs["attention_mask"] = nn.functional.pad(mask, (tokens, 0), value=opened)
    return args, kwargs


class PrefixTuning(PromptAdapter):
    """Deep prompts: ``tokens`` learned keys and values at every attention layer, started from the encoder's
    own keys and values for sampled vocabulary tokens (Li & Liang's initialisation from real activations,
    which keeps the encoder near where it was pretrained at the first step)."""

    name = "prefix"
    module = "prefix"
    # Validation accuracy, MiniLM gradual, 2 epochs of 1600 rows (the bench's), seed 0, trec / rt_polarity:
    # LR 3e-3 0.843 / 0.758, 1e-2 0.873 / 0.773, 3e-2 0.878 / 0.763. At 1e-2 none of these beat the noise (400
    # rows: +-2 points): tokens=5 0.870 / 0.778, tokens=20 0.865 / 0.755, random init 0.880 / 0.773, the head at
    # 1e-3 0.868 / 0.755, 0.5 epoch of warm-up 0.865 / 0.768, a 32-wide MLP reparameterisation 0.875 / 0.768,
    # 4 epochs (rt) 0.768, its best epoch the first (bench/results/prompts-lr-validation.json).
    lr = 1e-2

    def add(self, backbone: nn.Module, initialise: bool) -> None:
        from peft import PrefixEncoder, PrefixTuningConfig

        layers = attention_layers(backbone, self.name)
        config = backbone.config
        settings = PrefixTuningConfig(num_virtual_tokens=self.tokens, token_dim=config.hidden_size,
                                      num_layers=len(layers), num_attention_heads=config.num_attention_heads,
                                      num_transformer_submodules=1, prefix_projection=False,
                                      task_type="FEATURE_EXTRACTION")
        prefix = PrefixEncoder(settings)
        if initialise:
            with torch.no_grad():
                prefix.embedding.weight.copy_(sampled_states(backbone, layers, self.tokens))
        backbone.add_module(self.module, prefix)
        for i, attention in enumerate(layers):
            attention.key.register_forward_hook(partial(prepend_state, prefix, i, 0))
            attention.value.register_forward_hook(partial(prepend_state, prefix, i, 1))
            attention.register_forward_pre_hook(partial(widen_mask, self.tokens), with_kwargs=True)


@torch.no_grad()
def sampled_states(backbone: nn.Module, layers: list[nn.Module], tokens: int) -> torch.Tensor:
    """Each layer's keys and values for ``tokens`` random vocabulary tokens, as peft's prefix table lays them
    out: (tokens, layers x 2 x hidden)."""
    vocabulary = backbone.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocabulary, (1, tokens), device=backbone.get_input_embeddings().weight.device)
    captured: dict[tuple[int, int], torch.Tensor] = {}
    hooks = [linear.register_forward_hook(lambda m, a, out, key=(i, part): captured.__setitem__(key, out[0]))
             for i, attention in enumerate(layers) for part, linear in enumerate((attention.key, attention.value))]
    was_training = backbone.training
    try:
        backbone.eval()
        backbone(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    return torch.stack([torch.stack([captured[(i, 0)], captured[(i, 1)]], dim=1) for i in range(len(layers))],
                       dim=1).reshape(tokens, -1).float()

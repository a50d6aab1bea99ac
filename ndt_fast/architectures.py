"""ndt's architecture handlers: which family a model belongs to, and names for its tracked layers.

``detect_architecture(model)`` and ``get_handler(model, architecture=None)`` classify a model the
way ndtracker 2.0.0 does, trying the families from the most specific to the least:

=====================  ============================================================================
``ViTHandler``         a Conv1d/Conv2d together with ``nn.MultiheadAttention``, or a Conv1d/Conv2d
                       whose qualified name contains "patch" or "embed" (a patch embedding)
``TransformerHandler``  an ``nn.MultiheadAttention``, or a module whose class is named
                       ``TransformerEncoderLayer``/``TransformerDecoderLayer``
``CNNHandler``         any ``nn.Conv1d/2d/3d``
``MLPHandler``         an ``nn.Linear`` and neither convolutions nor attention
=====================  ============================================================================

**Which layers** (``get_activation_layers``): the ones FastTracker selects by itself
(``ndt_fast.layers.auto_select_layers``) — one selection rule in the library, so a handler's
layers and ``FastTracker(model)``'s are the same. For an MLP that is every ``nn.Linear``, as in
ndt. Elsewhere it differs from ndt on purpose: for ResNets, Transformers and ViTs the output of
each repeated block (the residual stream) plus the head, where ndt takes the last convolution of
each ResNet stage (the residual branch before the skip connection and its BatchNorm), the
``MultiheadAttention`` modules (whose tuple output ndt's hooks cannot read) or every other Linear;
for plain CNNs every convolution and Linear, where ndt stops at the first Linear.

**Names** (``get_layer_names``): ndt's naming scheme for each family, applied to those layers:
``Linear_{i}_{in}x{out}`` (MLP); ``Conv_{k}_{C}ch`` and ``FC_{k}_{out}`` (CNN); ``Attention_{k}``,
``FFN_{k}_{out}``/``FC_{k}_{out}`` (Transformer); ``PatchEmbed_{k}``, ``Attention_{k}``,
``MLP_{k}``, ``Layer_{k}`` (ViT). A module the scheme has no word for (a residual block) is
``Block_{k}`` (``Layer_{k}`` for ViTs, as ndt). Names are unique within one model.

Bad input: an architecture name other than mlp/cnn/transformer/vit, a model that does not match
the named family, or a model no family matches → ValueError (ndt's wording).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter

from torch import nn

from ndt_fast.layers import auto_select_layers

__all__ = [
    "ArchitectureHandler",
    "CNNHandler",
    "MLPHandler",
    "TransformerHandler",
    "ViTHandler",
    "detect_architecture",
    "get_handler",
    "get_layers_for_model",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSFORMER_LAYER_CLASSES = ("TransformerEncoderLayer", "TransformerDecoderLayer")


def _qualified_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


class ArchitectureHandler(ABC):
    """One model family: whether a model belongs to it, its tracked layers and their names."""

    @abstractmethod
    def validate_model(self, model: nn.Module) -> bool:
        """True when ``model`` belongs to this family (the rules in the module docstring)."""

    def get_activation_layers(self, model: nn.Module) -> list[nn.Module]:
        """The modules to track: FastTracker's own selection (see the module docstring)."""
        return auto_select_layers(model)

    def get_layer_names(self, model: nn.Module) -> list[str]:
        """One unique name per module of ``get_activation_layers(model)``, same order."""
        names = _qualified_names(model)
        counts: Counter[str] = Counter()
        out = []
        for layer in self.get_activation_layers(model):
            kind, suffix = self._kind(layer, names.get(id(layer), ""))
            out.append(f"{kind}_{counts[kind]}{suffix}")
            counts[kind] += 1
        return out

    def _kind(self, layer: nn.Module, qualified_name: str) -> tuple[str, str]:
        """(word, suffix) of a layer's name in this family's scheme."""
        return "Block", ""

    def get_name(self) -> str:
        """The family's name: the class name without "Handler" ("MLP", "CNN", …)."""
        return type(self).__name__.replace("Handler", "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MLPHandler(ArchitectureHandler):
    """Fully connected networks: ``nn.Linear`` layers, no convolution, no attention."""

    def validate_model(self, model: nn.Module) -> bool:
        modules = list(model.modules())
        return (any(isinstance(m, nn.Linear) for m in modules)
                and not any(isinstance(m, (*_CONVS, nn.MultiheadAttention)) for m in modules))

    def get_layer_names(self, model: nn.Module) -> list[str]:
        # ndt numbers the Linear layers by position in the list, with their shape.
        return [f"Linear_{i}_{m.in_features}x{m.out_features}" if isinstance(m, nn.Linear)
                else f"{type(m).__name__}_{i}"
                for i, m in enumerate(self.get_activation_layers(model))]


class CNNHandler(ArchitectureHandler):
    """Convolutional networks (plain CNNs and ResNets): any ``nn.Conv1d/2d/3d``."""

    def validate_model(self, model: nn.Module) -> bool:
        return any(isinstance(m, _CONVS) for m in model.modules())

    def _kind(self, layer: nn.Module, qualified_name: str) -> tuple[str, str]:
        if isinstance(layer, _CONVS):
            return "Conv", f"_{layer.out_channels}ch"
        if isinstance(layer, nn.Linear):
            return "FC", f"_{layer.out_features}"
        return "Block", ""


class TransformerHandler(ArchitectureHandler):
    """Transformers (BERT/GPT-style): ``nn.MultiheadAttention`` or torch's Transformer layers."""

    def validate_model(self, model: nn.Module) -> bool:
        return any(isinstance(m, nn.MultiheadAttention) or type(m).__name__ in _TRANSFORMER_LAYER_CLASSES
                   for m in model.modules())

    def _kind(self, layer: nn.Module, qualified_name: str) -> tuple[str, str]:
        if isinstance(layer, nn.MultiheadAttention):
            return "Attention", ""
        if isinstance(layer, nn.Linear):
            lowered = qualified_name.lower()
            return ("FFN" if "fc" in lowered or "ffn" in lowered else "FC"), f"_{layer.out_features}"
        return "Block", ""


class ViTHandler(ArchitectureHandler):
    """Vision Transformers: a convolutional patch embedding together with attention."""

    def validate_model(self, model: nn.Module) -> bool:
        has_conv = has_attention = has_patch_embedding = False
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                has_conv = True
                has_patch_embedding |= "patch" in name.lower() or "embed" in name.lower()
            has_attention |= isinstance(module, nn.MultiheadAttention)
        return (has_conv and has_attention) or has_patch_embedding

    def _kind(self, layer: nn.Module, qualified_name: str) -> tuple[str, str]:
        lowered = qualified_name.lower()
        if "patch" in lowered or "embed" in lowered:
            return "PatchEmbed", ""
        if isinstance(layer, nn.MultiheadAttention):
            return "Attention", ""
        if "mlp" in lowered or "ffn" in lowered:
            return "MLP", ""
        return "Layer", ""


#: Tried in this order by ``detect_architecture``: the most specific family first.
_BY_PRIORITY: tuple[ArchitectureHandler, ...] = (ViTHandler(), TransformerHandler(), CNNHandler(), MLPHandler())
_BY_NAME = {"mlp": MLPHandler, "cnn": CNNHandler, "transformer": TransformerHandler, "vit": ViTHandler}


def detect_architecture(model: nn.Module) -> ArchitectureHandler | None:
    """The handler of the first family (ViT, Transformer, CNN, MLP) that ``model`` matches, or None."""
    return next((handler for handler in _BY_PRIORITY if handler.validate_model(model)), None)


def get_handler(model: nn.Module, architecture: str | None = None) -> ArchitectureHandler:
    """The handler for ``model``: the named family (case-insensitive ``"mlp"``, ``"cnn"``,
    ``"transformer"``, ``"vit"``), checked against the model, or the detected one.

    ValueError: unknown name, a model that is not of the named family, or no family detected.
    """
    if architecture is None:
        handler = detect_architecture(model)
        if handler is None:
            raise ValueError("Could not auto-detect model architecture. Please specify architecture "
                             f"explicitly: one of {list(_BY_NAME)}")
        return handler
    key = architecture.lower()
    if key not in _BY_NAME:
        raise ValueError(f"Unknown architecture: {key}. Must be one of {list(_BY_NAME)}")
    handler = _BY_NAME[key]()
    if not handler.validate_model(model):
        raise ValueError(f"Model does not appear to be a {key.upper()}. "
                         "Try auto-detection by not specifying architecture.")
    return handler


def get_layers_for_model(model: nn.Module, architecture: str | None = None) -> tuple[list[nn.Module], list[str]]:
    """``(layers, layer_names)`` of ``get_handler(model, architecture)``: ready for FastTracker."""
    handler = get_handler(model, architecture)
    return handler.get_activation_layers(model), handler.get_layer_names(model)

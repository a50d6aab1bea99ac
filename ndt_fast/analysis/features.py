"""``FeatureVisualizer``: what a model attends to, at a moment of training (ndt's methods).

Attributions come from Captum (``pip install "ndt-fast[analysis]"``): Grad-CAM
(``LayerGradCam``), saliency (``Saliency``), integrated gradients (``IntegratedGradients``) and
ndt's "layer conductance", which is gradient × activation (``LayerGradientXActivation``), summed
over the batch. Activation maximisation is plain gradient ascent with ``torch.optim.SGD``.

Differences from ndt, on purpose:

* The model's train/eval mode is restored after each attribution (ndt leaves it in eval mode,
  which silently stops a tracker that skips eval forwards), and parameters' ``.grad`` are left
  untouched (Captum differentiates with ``torch.autograd.grad``; ndt overwrites them).
* ``integrated_gradients`` integrates with Captum's Gauss–Legendre rule on ``steps`` points;
  ndt averages the gradients at ``steps`` equally spaced points, both ends included. Both
  approximate the same integral (they agree exactly for a model linear in its input).
* ``layer_conductance`` with a batch of several inputs sums every input's own attribution;
  ndt differentiates the first input's score only.

Inputs are batches of one, ``(1, C, H, W)`` or ``(1, features)``, as in ndt; ``target_class``
indexes the model's output ``(batch, classes)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

try:
    from captum.attr import IntegratedGradients, LayerGradCam, LayerGradientXActivation, Saliency
except ImportError as error:  # an optional extra: say how to get it
    raise ImportError('ndt_fast.analysis.FeatureVisualizer needs Captum: pip install "ndt-fast[analysis]"') from error

__all__ = ["FeatureVisualizer"]


def _normalized(x: torch.Tensor) -> torch.Tensor:
    """Shifted and scaled into [0, 1] (all zeros stay zeros)."""
    x = x - x.min()
    peak = x.max()
    return x / peak if peak > 0 else x


class FeatureVisualizer:
    """Grad-CAM, saliency, integrated gradients, attention and feature maps of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.gradients: dict[str, torch.Tensor] = {}
        self.activations: dict[str, torch.Tensor] = {}
        self.hooks: list[RemovableHandle] = []

    # ---- hooks that keep activations and their gradients ------------------------------------------

    def _save_activation(self, name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.activations[name] = output.detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self.gradients.__setitem__(name, grad.detach()))

        return hook

    def register_hooks(self, layer_names: dict[str, nn.Module]) -> None:
        """Keep each named module's last output in ``activations`` and its gradient (after a
        backward pass) in ``gradients``."""
        for name, layer in layer_names.items():
            self.hooks.append(layer.register_forward_hook(self._save_activation(name)))

    def remove_hooks(self) -> None:
        """Remove the hooks and drop what they kept."""
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()
        self.gradients.clear()
        self.activations.clear()

    # ---- attributions -------------------------------------------------------------------------------

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode for the attribution, the caller's mode afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    @staticmethod
    def _leaf(input_tensor: torch.Tensor) -> torch.Tensor:
        """A copy of the input that requires grad (Captum warns when it has to set that itself)."""
        return input_tensor.detach().clone().requires_grad_(True)

    def grad_cam(self, input_tensor: torch.Tensor, target_class: int, target_layer: nn.Module,
                 layer_name: str = "target") -> np.ndarray:
        """Grad-CAM (Selvaraju et al. 2017) of ``target_layer`` (a conv layer, output (1, C, H, W)):
        ReLU(Σ_c mean(∂score/∂A_c) · A_c), scaled into [0, 1]; shape (H, W). ``layer_name`` is
        accepted for ndt's signature."""
        with self._evaluating():
            cam = LayerGradCam(self.model, target_layer).attribute(
                self._leaf(input_tensor), target=target_class, relu_attributions=True)
        return _normalized(cam.detach()).squeeze().cpu().numpy()

    def saliency_map(self, input_tensor: torch.Tensor, target_class: int, absolute: bool = True) -> np.ndarray:
        """∂score/∂input (|·| with ``absolute``); for multi-channel images the maximum over the
        channels, shape (H, W); for (1, features) inputs shape (features,)."""
        with self._evaluating():
            saliency = Saliency(self.model).attribute(self._leaf(input_tensor), target=target_class, abs=absolute)
        saliency = saliency.detach()
        if saliency.dim() == 4 and saliency.shape[1] > 1:
            saliency = saliency.amax(dim=1, keepdim=True)
        return saliency.squeeze().cpu().numpy()

    def integrated_gradients(self, input_tensor: torch.Tensor, target_class: int,
                             baseline: torch.Tensor | None = None, steps: int = 50) -> np.ndarray:
        """Integrated gradients (Sundararajan et al. 2017) from ``baseline`` (default zeros) to
        the input with ``steps`` points; the input's shape, squeezed."""
        baseline = torch.zeros_like(input_tensor) if baseline is None else baseline
        with self._evaluating():
            attribution = IntegratedGradients(self.model).attribute(
                self._leaf(input_tensor), baselines=baseline, target=target_class, n_steps=steps)
        return attribution.detach().squeeze().cpu().numpy()

    def layer_conductance(self, input_tensor: torch.Tensor, target_class: int, target_layer: nn.Module) -> np.ndarray:
        """ndt's "conductance": gradient × activation of ``target_layer``'s output, summed over
        the batch; shape: the layer's output without its batch dimension."""
        with self._evaluating():
            attribution = LayerGradientXActivation(self.model, target_layer).attribute(
                self._leaf(input_tensor), target=target_class)
        return attribution.detach().sum(dim=0).cpu().numpy()

    # ---- tensors the caller already has -------------------------------------------------------

    def attention_visualization(self, attention_weights: torch.Tensor, head_idx: int | None = None) -> np.ndarray:
        """Attention weights (batch, heads, seq, seq): one head's, or the mean over heads; squeezed."""
        attention = attention_weights[:, head_idx] if head_idx is not None else attention_weights.mean(dim=1)
        return attention.detach().squeeze().cpu().numpy()

    def feature_maps(self, activation: torch.Tensor, top_k: int = 16) -> list[np.ndarray]:
        """The ``top_k`` channels of the first sample of ``activation`` (batch, C, H, W) with the
        largest mean |value|, each scaled into [0, 1] (H, W), strongest first."""
        strength = activation[0].detach().abs().mean(dim=(1, 2))
        top = strength.topk(min(top_k, activation.shape[1])).indices
        maps = []
        for channel in top:
            fmap = activation[0, channel].detach()
            maps.append(((fmap - fmap.min()) / (fmap.max() - fmap.min() + 1e-8)).cpu().numpy())
        return maps

    def neuron_activation_maximization(self, target_layer: nn.Module, neuron_idx: int, input_shape: tuple[int, ...],
                                       steps: int = 100, lr: float = 0.1) -> torch.Tensor:
        """An input (1, *input_shape), from ``torch.randn``, moved by ``steps`` steps of gradient
        ascent (learning rate ``lr``) to raise unit ``neuron_idx`` of ``target_layer`` (its
        spatial mean for conv outputs). Returns it detached."""
        image = torch.randn(1, *input_shape, requires_grad=True)
        optimizer = torch.optim.SGD([image], lr=lr, maximize=True)
        unit: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            unit.append(output[0, neuron_idx] if output.dim() == 2 else output[0, neuron_idx].mean())

        handle = target_layer.register_forward_hook(hook)
        try:
            for _ in range(steps):
                unit.clear()
                optimizer.zero_grad()
                self.model(image)
                (grad,) = torch.autograd.grad(unit[0], image)
                image.grad = grad
                optimizer.step()
        finally:
            handle.remove()
        return image.detach()

    def compare_features(self, input_tensor: torch.Tensor, target_class: int, target_layer: nn.Module,
                         checkpoint_before: str | os.PathLike[str],
                         checkpoint_after: str | os.PathLike[str]) -> dict[str, Any]:
        """Grad-CAM under two checkpoints (files saved by ``torch.save({"model_state_dict": …})``,
        loaded onto the CPU; the model keeps the second one's weights): ``cam_before``,
        ``cam_after``, ``cam_diff`` (after − before), ``mean_change`` (mean |diff|)."""
        cams = []
        for path in (checkpoint_before, checkpoint_after):
            state = torch.load(path, map_location="cpu")
            self.model.load_state_dict(state["model_state_dict"])
            cams.append(self.grad_cam(input_tensor, target_class, target_layer))
        diff = cams[1] - cams[0]
        return {"cam_before": cams[0], "cam_after": cams[1], "cam_diff": diff, "mean_change": np.abs(diff).mean()}

"""Grad-CAM through the head of each size: where does the model look when it has m dimensions?

Selvaraju et al., "Grad-CAM", https://arxiv.org/abs/1610.02391. One forward pass records the
target layer's activations ``A`` of shape (B, Ch, h, w); for each size ``m`` the gradient of that
size's class score with respect to ``A`` is averaged over space to weight the channels, and
``relu(sum_c w_c A_c)`` is upsampled to the image. The backbone runs once; only the backward
passes repeat per size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["gradcam_per_size", "default_cam_layer"]


def default_cam_layer(backbone: nn.Module) -> nn.Module:
    """The last conv block of a ready-made backbone (ResNet ``layer4``, SmallCNN ``stage3``)."""
    net = getattr(backbone, "net", None)
    if net is not None and hasattr(net, "layer4"):
        return net.layer4
    if hasattr(backbone, "stage3"):
        return backbone.stage3
    raise ValueError(
        f"no default Grad-CAM layer for {type(backbone).__name__}; pass layer= (a conv block)"
    )


def gradcam_per_size(
    model: nn.Module,
    x: Tensor,
    sizes: Sequence[int],
    target: Tensor | None = None,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM heat maps of each size's head for a batch of images.

    Parameters
    ----------
    model : :class:`~matryoshka.nn.MatryoshkaModel` with a convolutional backbone
    x : Tensor of shape (B, 3, H, W)
    sizes : sizes whose head ``logits_at(z, m)`` is explained
    target : Tensor of shape (B,), optional
        Class to explain per image; default each size's own prediction.
    layer : module, optional
        Convolutional block whose output is explained (default :func:`default_cam_layer`).

    Returns
    -------
    ndarray of shape (B, len(sizes), H, W), float32, each map scaled to [0, 1]
    """
    layer = layer if layer is not None else default_cam_layer(model.backbone)
    store: dict[str, Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("act", out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            z = model.embed(x)  # (B, d): one backbone pass for every size
            act = store["act"]  # (B, Ch, h, w)
            maps = []
            for i, m in enumerate(sizes):
                logits = model.head.logits_at(z, m)  # (B, C)
                cls = logits.argmax(1) if target is None else target
                score = logits.gather(1, cls[:, None]).sum()
                (grad,) = torch.autograd.grad(score, act, retain_graph=i < len(sizes) - 1)
                weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, Ch, 1, 1)
                cam = F.relu((weights * act).sum(1, keepdim=True))  # (B, 1, h, w)
                cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
                cam = cam[:, 0]  # (B, H, W)
                peak = cam.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
                maps.append((cam / peak).detach())
    finally:
        handle.remove()
        model.train(was_training)
    return torch.stack(maps, dim=1).float().numpy()  # (B, S, H, W)

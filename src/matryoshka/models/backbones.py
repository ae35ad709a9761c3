"""Backbones: modules mapping inputs to embeddings of shape (B, d).

Any ``nn.Module`` that returns (B, d) works with :class:`matryoshka.nn.MatryoshkaModel`; these are
the ready-made ones: an MLP for small inputs, a compact CNN for 32x32 images, and torchvision
ResNets (optionally with the CIFAR stem: 3x3 first convolution, no max-pool).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from matryoshka._optional import require

__all__ = ["MLP", "SmallCNN", "resnet", "build_backbone", "backbone_blocks", "BACKBONES"]


class MLP(nn.Module):
    """Flatten, then ``Linear -> BatchNorm -> ReLU`` blocks, then ``Linear(hidden[-1], d)``.

    Shapes: x (B, *in_shape) with prod(in_shape) == in_features -> z (B, d).
    """

    def __init__(
        self,
        in_features: int,
        d: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h, **kw), nn.BatchNorm1d(h, **kw), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, d, **kw))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, d)


class SmallCNN(nn.Module):
    """A compact VGG-style CNN for 32x32 images, cheap enough to train on a laptop CPU.

    Three stages of two 3x3 convolutions (widths ``width, 2*width, 4*width``) with BatchNorm and
    ReLU, max-pooling between stages, global average pooling, then ``Linear(4*width, d)``.

    Shapes: x (B, 3, H, W) -> z (B, d).
    """

    def __init__(
        self,
        d: int,
        width: int = 32,
        in_channels: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw),
                nn.BatchNorm2d(cout, **kw),
                nn.ReLU(inplace=True),
            ]

        w = width
        self.stage1 = nn.Sequential(*block(in_channels, w), *block(w, w))  # (B, w, H, W)
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), *block(w, 2 * w), *block(2 * w, 2 * w))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), *block(2 * w, 4 * w), *block(4 * w, 4 * w))
        self.proj = nn.Linear(4 * w, d, **kw)
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        h = self.stage3(self.stage2(self.stage1(x)))  # (B, 4w, H/4, W/4)
        return self.proj(h.mean(dim=(2, 3)))  # global average pool, then (B, d)


class _ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier, plus a projection when ``d`` differs."""

    def __init__(self, net: nn.Module, width: int, d: int) -> None:
        super().__init__()
        net.fc = nn.Identity()
        self.net = net
        self.proj = nn.Identity() if d == width else nn.Linear(width, d)
        self.width = width
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.net(x))  # (B, width) -> (B, d)


def resnet(
    name: str = "resnet18",
    d: int | None = None,
    cifar_stem: bool = False,
    weights: str | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """A torchvision ResNet as a backbone returning (B, d): x (B, in_channels, H, W) -> (B, d).

    Parameters
    ----------
    name : {"resnet18", "resnet34", "resnet50", "resnet101"}
    d : int, optional
        Embedding size; default the network's own width (512 for ResNet-18, 2048 for ResNet-50).
        Any other size adds a ``Linear(width, d)`` projection.
    cifar_stem : bool
        Replace the 7x7 stride-2 stem and max-pool with a 3x3 stride-1 convolution, as is usual
        for 32x32 images.
    weights : str, optional
        A torchvision weights name (e.g. ``"IMAGENET1K_V2"``, downloads on a user's machine) or a
        local ``.pth``/``.safetensors`` state dict of the torchvision network.
    in_channels : int
        Channels of the input images (1 for grayscale). Other than 3, the first convolution is
        a fresh one taking that many (pretrained ``weights`` keep their other layers).
    """
    torchvision = require("torchvision", "ResNet backbones")
    builders = {n: getattr(torchvision.models, n) for n in ("resnet18", "resnet34", "resnet50")}
    builders["resnet101"] = torchvision.models.resnet101
    if name not in builders:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {sorted(builders)}")
    local = weights is not None and (weights.endswith(".pth") or weights.endswith(".safetensors"))
    net = builders[name](weights=None if (weights is None or local) else weights)
    if local:
        net.load_state_dict(_load_state_dict(weights))
    width = net.fc.in_features
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return _ResNetBackbone(net, width, width if d is None else d)


def _load_state_dict(path: str) -> dict[str, Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


BACKBONES = ("mlp", "small_cnn", "resnet18", "resnet34", "resnet50", "resnet101")


def build_backbone(name: str, d: int, **kwargs: Any) -> nn.Module:
    """Backbone factory used by the training configs: ``name`` is one of :data:`BACKBONES`.

    ``kwargs`` go to the builder: ``in_features``/``hidden``/``dropout`` for ``mlp``,
    ``width``/``in_channels`` for ``small_cnn``, ``cifar_stem``/``weights``/``in_channels`` for
    ResNets.
    """
    builders = {"mlp": MLP, "small_cnn": SmallCNN}
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    builder = builders.get(name, resnet)
    valid = [p for p in inspect.signature(builder).parameters if p not in ("d", "name")]
    unknown = sorted(set(kwargs) - set(valid))
    required = [
        n for n, p in inspect.signature(builder).parameters.items()
        if p.default is inspect.Parameter.empty and n not in ("d", "name") and n not in kwargs
    ]  # fmt: skip
    if required:
        raise ValueError(f"backbone {name} needs {required[0]!r} in model.backbone_kwargs")
    if unknown:
        raise ValueError(
            f"backbone {name} takes no argument {unknown[0]!r} (model.backbone_kwargs); its "
            f"arguments: {', '.join(valid)}"
        )
    if name.startswith("resnet"):
        return resnet(name, d=d, **kwargs)
    return builder(d=d, **kwargs)


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks from input to output, for unfreezing the last ``k`` when fine-tuning.

    ResNets: stem, ``layer1``, ``layer2``, ``layer3``, ``layer4`` with the projection.
    SmallCNN: its three stages, the last with the projection. A module with a ``blocks()``
    method (an open_clip image tower): its list. Other modules: every sub-module that holds
    parameters of its own, in order.
    """
    if callable(getattr(backbone, "blocks", None)):
        return list(backbone.blocks())
    if isinstance(backbone, _ResNetBackbone):
        net = backbone.net
        stem = nn.ModuleList([net.conv1, net.bn1])
        return [
            stem,
            net.layer1,
            net.layer2,
            net.layer3,
            nn.ModuleList([net.layer4, backbone.proj]),
        ]
    if isinstance(backbone, SmallCNN):
        return [backbone.stage1, backbone.stage2, nn.ModuleList([backbone.stage3, backbone.proj])]
    return [m for m in backbone.modules() if any(True for _ in m.parameters(recurse=False))]

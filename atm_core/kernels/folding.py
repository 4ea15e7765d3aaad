"""Eval-mode BatchNorm folded into the preceding convolution.

In eval mode a BatchNorm is an affine map per channel, so ``Conv2d -> BatchNorm2d -> ReLU`` is one
conv with a bias followed by an in-place ReLU: one pass over the output instead of three. In
training mode the three modules run as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_parameters(layer: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, bias)`` of ``layer``'s conv with the eval-mode BatchNorm folded in, else ``(weight, None)``."""
    conv, norm = layer[0], layer[1]
    if norm.training or norm.running_var is None:
        return conv.weight, None
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    return conv.weight * scale.view(-1, 1, 1, 1), norm.bias - norm.running_mean * scale


def convolve(layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The conv alone (the eval-mode BatchNorm's scale folded in, its shift left to ``activate``)."""
    conv = layer[0]
    return F.conv2d(x, conv_parameters(layer)[0], None, conv.stride, conv.padding)


def activate(layer: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
    """What follows ``convolve``: ``conv_bn_relu(layer, x) == activate(layer, convolve(layer, x))``."""
    bias = conv_parameters(layer)[1]
    return (y + bias.view(-1, 1, 1)).relu_() if bias is not None else layer[2](layer[1](y))


def conv_bn_relu(layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a ``Conv2d -> BatchNorm2d -> ReLU`` layer, the BatchNorm folded in eval mode."""
    weight, bias = conv_parameters(layer)
    conv = layer[0]
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding)
    return y.relu_() if bias is not None else layer[2](layer[1](y))


def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``conv_bn_relu`` through a stack of such layers."""
    for layer in layers:
        x = conv_bn_relu(layer, x)
    return x

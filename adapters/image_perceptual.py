"""An LPIPS-like perceptual loss on torchvision VGG16 features, from LOCAL weights only.

mmvq downloads nothing. The weights file is a torchvision VGG16 state dict (the full model's,
keys ``features.N.weight``, or only the feature extractor's, keys ``N.weight``), stored as
``.safetensors`` or as a ``torch.save`` file (read with ``torch.load(weights_only=True)``).
Make one on a machine with internet access::

    import torchvision, torch
    torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict(), "vgg16.pth")

The distance follows LPIPS (Zhang et al. 2018): features at relu1_2, relu2_2, relu3_3, relu4_3
and relu5_3 are unit-normalised along channels, squared differences are summed over channels
(or weighted by LPIPS' learned 1x1 "lin" layers when the file also holds keys
``lin{i}.model.1.weight``, as in the ``lpips`` package's ``vgg.pth``), averaged over space and
summed over layers. The network is frozen.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import vgg16

__all__ = ["VGGPerceptualLoss", "load_state_dict_file", "missing_weights_message", "vgg16_trunk"]

# Slices of torchvision's vgg16().features ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_CHANNELS = (64, 128, 256, 512, 512)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def missing_weights_message(weight: float, path: str | None) -> str:
    """The error text for a perceptual loss that has no local weights."""
    where = "no perceptual_weights_path was given" if path is None else f"{path!r} does not exist"
    return (
        f"ImageAdapterConfig.perceptual_weight={weight} needs local VGG16 weights, but {where}. "
        "mmvq downloads nothing: save a torchvision VGG16 state dict on a machine with internet "
        "(torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), "
        "'vgg16.pth')), copy it here and pass perceptual_weights_path='/path/to/vgg16.pth' "
        "(.pth/.pt or .safetensors), or set perceptual_weight=0.0."
    )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``)."""
    path = Path(os.fspath(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(
            f"perceptual_weights_path {str(path)!r} holds a {type(state).__name__}, not a state "
            "dict; save model.state_dict() of torchvision.models.vgg16."
        )
    return state


def vgg16_trunk(device: str | torch.device = "cpu") -> nn.Sequential:
    """torchvision VGG16 ``features`` up to relu5_3, uninitialised (weights are loaded after).

    Built on the meta device first so that the 120M-parameter classifier is never allocated.
    """
    with torch.device("meta"):
        trunk = vgg16(weights=None).features[: _SLICES[-1][1]]
    return trunk.to_empty(device=device)


class VGGPerceptualLoss(nn.Module):
    """Frozen LPIPS-like distance: ``forward(x, y) -> [B]`` for images in ``[-1, 1]``."""

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        state = load_state_dict_file(weights_path)
        features = {
            k.removeprefix("features."): v
            for k, v in state.items()
            if not k.startswith(("classifier.", "lin"))
        }
        trunk = vgg16_trunk()
        try:
            trunk.load_state_dict(features, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"perceptual_weights_path {str(weights_path)!r} is not a torchvision VGG16 state "
                f"dict ({str(err).splitlines()[0]}); expected keys like 'features.0.weight'."
            ) from None
        self.slices = nn.ModuleList(trunk[a:b] for a, b in _SLICES)
        lin = [state.get(f"lin{i}.model.1.weight") for i in range(len(_SLICES))]
        if all(w is not None for w in lin):
            weights = [w.reshape(1, c, 1, 1).float() for w, c in zip(lin, _CHANNELS, strict=True)]
        else:
            weights = [torch.ones(1, c, 1, 1) for c in _CHANNELS]
        self.lin = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in weights)
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Always stays in eval mode (frozen)."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample distance ``[B]`` between image batches ``x``, ``y`` in ``[-1, 1]``."""
        h_x = ((x + 1) / 2 - self.mean) / self.std
        h_y = ((y + 1) / 2 - self.mean) / self.std
        total = x.new_zeros(x.shape[0])
        for block, w in zip(self.slices, self.lin, strict=True):
            h_x, h_y = block(h_x), block(h_y)
            n_x = h_x / (h_x.norm(dim=1, keepdim=True) + 1e-10)
            n_y = h_y / (h_y.norm(dim=1, keepdim=True) + 1e-10)
            total = total + ((n_x - n_y).square() * w).sum(dim=1).mean(dim=(1, 2))
        return total

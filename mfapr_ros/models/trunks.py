"""CNN trunks cut into five named stages ``block-1`` … ``block-5``, built from torchvision blocks.

Every fusion position needs to cut a CNN at the same named places (mid fusion at ``block-k``, TransPoseNet's two
feature scales at ``block-3``/``block-4``), so each architecture is expressed once as an ``nn.ModuleList`` of five
stages with known channel counts. ``tiny`` is a few-conv CNN for tests and the CPU demo.

Pretrained ImageNet weights go through the torchvision weights API; offline, a missing file becomes a
:class:`~mfapr_ros.core.errors.ConfigError` that says how to pre-download it into ``TORCH_HOME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mfapr_ros.core.errors import ConfigError

#: arch → (torchvision builder, weights enum name, channels of block-1..block-5).
ARCHS: dict[str, tuple[str | None, str | None, tuple[int, ...]]] = {
    "tiny": (None, None, (1, 1, 2, 4, 8)),  # multiples of `width`
    "resnet18": ("resnet18", "ResNet18_Weights", (64, 64, 128, 256, 512)),
    "resnet34": ("resnet34", "ResNet34_Weights", (64, 64, 128, 256, 512)),
    "resnet50": ("resnet50", "ResNet50_Weights", (64, 256, 512, 1024, 2048)),
    "googlenet": ("googlenet", "GoogLeNet_Weights", (64, 192, 480, 832, 1024)),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", (16, 24, 40, 112, 1280)),
}


def stage_channels(arch: str, width: int = 16) -> tuple[int, ...]:
    """Output channels of block-1..block-5 for ``arch`` (``width`` scales the ``tiny`` trunk)."""
    ch = ARCHS[arch][2]
    return tuple(c * width for c in ch) if arch == "tiny" else ch


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _tiny(in_channels: int, width: int) -> nn.ModuleList:
    """Five stride-2 stages; stages 2-5 add a stride-1 conv so the demo model has some depth at low cost."""
    c = stage_channels("tiny", width)
    stages = [nn.Sequential(*_conv_bn(in_channels, c[0], 2))]
    for i in range(1, 5):
        stages.append(nn.Sequential(*_conv_bn(c[i - 1], c[i], 2), *_conv_bn(c[i], c[i], 1)))
    return nn.ModuleList(stages)


def load_pretrained_state(weights_enum: str) -> dict[str, torch.Tensor]:
    """ImageNet state dict through the torchvision weights API, with an actionable error when offline."""
    import torchvision

    weights = getattr(torchvision.models, weights_enum).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # noqa: BLE001 - urllib/ssl/socket/RuntimeError all mean "could not fetch"
        raise ConfigError(
            f"pretrained: cannot load {weights_enum}.DEFAULT ({type(e).__name__}: {e}). The file {cache.name} is not "
            f"in {cache.parent} and cannot be downloaded. On a connected machine run "
            f"`python -c \"import torchvision; torchvision.models.{weights_enum}.DEFAULT.get_state_dict()\"` and copy "
            f"{cache.name} into $TORCH_HOME/hub/checkpoints/ here (TORCH_HOME now resolves to "
            f"{Path(torch.hub.get_dir()).parent}), or set `pretrained: false`.") from None


def _widen_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """Same conv with ``in_channels`` inputs; RGB weights are replicated and scaled by 3/C (channel fusion).

    Scaling keeps the activation statistics of T stacked normalised images close to those of one image, so a
    pretrained trunk starts from sensible features.
    """
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        reps = -(-in_channels // conv.in_channels)
        w = conv.weight.repeat(1, reps, 1, 1)[:, :in_channels] * (conv.in_channels / in_channels)
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def build_trunk(arch: str, in_channels: int = 3, width: int = 16, pretrained: bool = False,
                num_stages: int = 5) -> nn.ModuleList:
    """The first ``num_stages`` stages of ``arch`` as an ``nn.ModuleList`` (unused stages are not kept, so every
    parameter of the returned trunk receives gradients)."""
    if arch not in ARCHS:
        raise ConfigError(f"arch: unknown '{arch}'; choose one of {sorted(ARCHS)}")
    if arch == "tiny":
        if pretrained:
            raise ConfigError("pretrained: the 'tiny' arch has no ImageNet weights; set pretrained: false")
        return nn.ModuleList(list(_tiny(in_channels, width))[:num_stages])
    import torchvision

    builder, weights_enum, _ = ARCHS[arch]
    kw: dict[str, Any] = {"weights": None}
    if arch == "googlenet":
        kw.update(aux_logits=False, transform_input=False, init_weights=not pretrained)
    net = getattr(torchvision.models, builder)(**kw)
    if pretrained:
        assert weights_enum is not None
        state = load_pretrained_state(weights_enum)
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
        net.load_state_dict(state, strict=True)
    if arch.startswith("resnet"):
        net.conv1 = _widen_conv(net.conv1, in_channels)
        stages = [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3,
                  net.layer4]
    elif arch == "googlenet":
        net.conv1.conv = _widen_conv(net.conv1.conv, in_channels)
        stages = [nn.Sequential(net.conv1, net.maxpool1),
                  nn.Sequential(net.conv2, net.conv3, net.maxpool2),
                  nn.Sequential(net.inception3a, net.inception3b, net.maxpool3),
                  nn.Sequential(net.inception4a, net.inception4b, net.inception4c, net.inception4d,
                                net.inception4e, net.maxpool4),
                  nn.Sequential(net.inception5a, net.inception5b)]
    else:  # efficientnet_b0
        f = net.features
        f[0][0] = _widen_conv(f[0][0], in_channels)
        stages = [nn.Sequential(f[0], f[1]), f[2], f[3], nn.Sequential(f[4], f[5]), nn.Sequential(f[6], f[7], f[8])]
    return nn.ModuleList(stages[:num_stages])

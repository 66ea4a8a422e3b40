"""Classification backbones by name, all from MONAI (timm/torchvision do not run on our CPU torch build).

Every backbone is wrapped in ``ClassifierNet``: the MONAI network with its own last layer replaced by an
identity (so it yields the penultimate features), a dropout and our linear ``head``. That one shape gives the
safety layer its features, lets ``--freeze`` train only the head, and lets pretrained checkpoints load into
``net`` whatever head they were trained with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.networks import nets
from torch import nn

from medsight.errors import ConfigError
from medsight.nets import registry

# EfficientNet-Lite0 (no squeeze-excitation, ReLU6, fixed stem/head): b0's blocks without "se0.25"
LITE0_BLOCKS = ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
                "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320"]


# MONAI's EfficientNets keep TensorFlow's BatchNorm decay 0.99, i.e. torch momentum 0.01: the running statistics
# need ~500 steps to forget their initial (0, 1), while our CPU-sized runs take 30-200. torch's default 0.1 forgets
# in ~50 (see _depthwise_init for why a fresh network's true statistics were far from (0, 1)).
EFFICIENTNET_NORM = ("batch", {"eps": 1e-3, "momentum": 0.1})
EVIDENCE_SHARPNESS = 4.0  # log-sum-exp pooling of evidence maps; stored in each model's config.json


class ClassifierNet(nn.Module):
    """MONAI feature extractor ``net`` + dropout + ``head``; ``forward_with_features`` returns both.

    Usually ``net`` ends in global pooling and ``head`` is linear. With ``evidence_map`` the network is fully
    convolutional instead: ``net`` returns a feature map, ``head`` is a 1x1 convolution that turns it into one
    evidence map per output, and a logit is the map's spatial maximum (multiple-instance pooling: an image is
    positive when one place is). A finding then decides the score from where it is, and Grad-CAM at ``net``'s
    last layer reduces to that evidence map, so the heatmap's maximum is the place the decision came from.
    The maximum is a smooth one, log-sum-exp with sharpness ``evidence_sharpness`` (0: the hard maximum): a hard
    maximum sends the gradient to one cell per image, and on the demo slices one of two seeds then never
    left the prior in 30 epochs; with r = 4 all three did (docs/classification.md). Any pooling whose weights
    sum to one over positions keeps Grad-CAM equal to the evidence map.
    """

    def __init__(self, net: nn.Module, feature_dim: int, n_outputs: int, dropout: float = 0.2,
                 sequence_output: bool = False, evidence_map: bool = False, spatial_dims: int = 2) -> None:
        super().__init__()
        self.net = net
        self.dropout = nn.Dropout(dropout)
        self.evidence_map = evidence_map
        self.evidence_sharpness = EVIDENCE_SHARPNESS
        if evidence_map:
            self.head = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(feature_dim, n_outputs, kernel_size=1)
        else:
            self.head = nn.Linear(feature_dim, n_outputs)
        self.sequence_output = sequence_output  # MONAI's ViT returns (output, hidden_states)
        self.aux_layer: str | None = None
        self.aux_head: nn.Module | None = None

    def add_localisation_head(self, layer: str, channels: int, spatial_dims: int) -> None:
        """A 1x1 convolution on ``layer``'s feature map that predicts the lesion mask there (training aid)."""
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.aux_layer = layer
        self.aux_head = conv(channels, 1, kernel_size=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.sequence_output:
            out = out[0]
        return torch.flatten(out, 1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.evidence_map:
            fmap = self.net(x)
            evidence = self.head(self.dropout(fmap)).flatten(2)
            r = self.evidence_sharpness
            if r > 0:  # log-sum-exp: a smooth maximum
                pooled = (torch.logsumexp(r * evidence, 2) - math.log(evidence.shape[2])) / r
            else:
                pooled = torch.amax(evidence, 2)
            return pooled, torch.amax(fmap.flatten(2), 2)
        f = self.features(x)
        return self.head(self.dropout(f)), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def _resnet(depth: int, width: float = 1.0, max_pool: bool = False,
            fine: bool = False) -> Callable[..., tuple[nn.Module, str]]:
    def build(dims: int, in_ch: int, size: Sequence[int]) -> tuple[nn.Module, str]:
        # fine: no max-pool after the stem, so the stem reduces 2x instead of 4x and a finding a few pixels
        # across still covers a cell of layer1 (at 4x it is averaged away before the first residual block)
        net = getattr(nets, f"resnet{depth}")(spatial_dims=dims, n_input_channels=in_ch, num_classes=1,
                                              conv1_t_stride=2, widen_factor=width, no_max_pool=fine)
        if max_pool:  # a small finding is one cell of the last feature map: averaging would dilute it
            net.avgpool = nn.AdaptiveMaxPool2d(1) if dims == 2 else nn.AdaptiveMaxPool3d(1)
        net.fc = nn.Identity()
        return net, "net.layer4"
    return build


class ResNetTrunk(nn.Module):
    """A MONAI ResNet's stem and its first ``stages`` residual stages, returning the feature map (no pooling).

    Submodules keep the ResNet's names (``conv1``, ``layer2``...), so checkpoints of the full network load
    (minus the stages left out) and layer names for Grad-CAM read the same."""

    def __init__(self, resnet: nn.Module, stages: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act = resnet.conv1, resnet.bn1, resnet.act
        self.maxpool = None if resnet.no_max_pool else resnet.maxpool
        self.stages = stages
        for i in range(1, stages + 1):
            setattr(self, f"layer{i}", getattr(resnet, f"layer{i}"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for i in range(1, self.stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return x


def _resnet_evidence(depth: int, width: float, stages: int) -> Callable[..., tuple[nn.Module, str]]:
    """Fully convolutional ResNet trunk (stem without max-pool) for ``ClassifierNet(evidence_map=True)``.

    Two stages put the evidence map at 1/4 of the input (24x24 cells for 96x96): fine enough that a heatmap
    maximum lands inside a lesion a few millimetres across, with a receptive field (~50 px) that still sees
    the lesion against its surrounding tissue. On the demo slices, three stages (1/8, 12x12 cells) reached the
    same AUC but a pointing game of 0.39 against 0.97 (docs/classification.md)."""
    def build(dims: int, in_ch: int, size: Sequence[int]) -> tuple[nn.Module, str]:
        full = getattr(nets, f"resnet{depth}")(spatial_dims=dims, n_input_channels=in_ch, num_classes=1,
                                               conv1_t_stride=2, widen_factor=width, no_max_pool=True)
        return ResNetTrunk(full, stages), f"net.layer{stages}"
    return build


def _densenet(variant: str) -> Callable[..., tuple[nn.Module, str]]:
    def build(dims: int, in_ch: int, size: Sequence[int]) -> tuple[nn.Module, str]:
        net = getattr(nets, variant)(spatial_dims=dims, in_channels=in_ch, out_channels=1)
        net.class_layers.out = nn.Identity()
        return net, "net.features.denseblock4"  # the last conv block, before norm5/relu/pool
    return build


def _depthwise_init(net: nn.Module) -> None:
    """He (fan-out) initialisation of grouped convolutions counting the outputs one weight feeds (out / groups).

    MONAI initialises every convolution with std sqrt(2 / (k x k x out_channels)), also the depthwise ones, where
    each weight feeds k x k outputs of one channel (TensorFlow's reference: fan-out k x k). Their outputs then have
    variance 1e-4-3e-2 in a fresh Lite0, under BatchNorm's eps 1e-3: in training BatchNorm cannot restore the signal
    (output variance 0.1-0.5 at the deep blocks), and in eval mode, with running variance still near its initial 1,
    each block shrinks it ~10-100x: one output for every image (feature spread 3e-9; contrastive validation loss
    exactly ln(2B - 1), classifier AUC 0.5 after a few dozen steps; tests/classification/test_bn_momentum.py)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.groups > 1:
            fan_out = math.prod(m.kernel_size) * m.out_channels // m.groups
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))


def _efficientnet(model_name: str) -> Callable[..., tuple[nn.Module, str]]:
    def build(dims: int, in_ch: int, size: Sequence[int]) -> tuple[nn.Module, str]:
        net = nets.EfficientNetBN(model_name, pretrained=False, spatial_dims=dims, in_channels=in_ch, num_classes=1,
                                  norm=EFFICIENTNET_NORM)
        _depthwise_init(net)
        net._fc = nn.Identity()
        return net, "net._conv_head"
    return build


def _efficientnet_lite0(dims: int, in_ch: int, size: Sequence[int]) -> tuple[nn.Module, str]:
    net = nets.EfficientNet(LITE0_BLOCKS, spatial_dims=dims, in_channels=in_ch, num_classes=1,
                            width_coefficient=1.0, depth_coefficient=1.0, dropout_rate=0.2, image_size=224,
                            norm=EFFICIENTNET_NORM)
    _depthwise_init(net)
    for module in net.modules():  # Lite uses ReLU6 where B0 uses swish
        if hasattr(module, "_swish"):
            module._swish = nn.ReLU6()
    net._fc = nn.Identity()
    return net, "net._conv_head"


def _vit(dims: int, in_ch: int, size: Sequence[int]) -> tuple[nn.Module, str]:
    patch = 16 if min(size) >= 64 else 8
    if any(s % patch for s in size):
        raise ConfigError(f"ViT needs an input size divisible by its patch size {patch}, got {list(size)}")
    net = nets.ViT(in_channels=in_ch, img_size=tuple(size), patch_size=patch, hidden_size=192, mlp_dim=768,
                   num_layers=6, num_heads=3, spatial_dims=dims, classification=True, num_classes=1)
    net.classification_head = nn.Identity()
    return net, "net.blocks.5.norm1"


BACKBONES: dict[str, Callable[..., tuple[nn.Module, str]]] = {
    **{f"resnet{d}": _resnet(d) for d in (10, 18, 34, 50)},
    # a quarter of the channels (16-128): CPU-sized, for the demo and tests
    **{f"resnet{d}-slim": _resnet(d, 0.25) for d in (10, 18)},
    **{f"resnet{d}-slim-maxpool": _resnet(d, 0.25, max_pool=True) for d in (10, 18)},
    # stem without max-pool (twice the resolution in every block) and max pooling at the end: small findings
    **{f"resnet{d}-slim-fine": _resnet(d, 0.25, max_pool=True, fine=True) for d in (10, 18)},
    # fully convolutional, evidence map + spatial max (see ClassifierNet): localised findings
    **{f"resnet{d}{w}-evidence": _resnet_evidence(d, f, 2) for d in (10, 18) for w, f in (("", 1.0),
                                                                                           ("-slim", 0.25))},
    "densenet121": _densenet("DenseNet121"),
    "densenet169": _densenet("DenseNet169"),
    **{f"efficientnet-b{i}": _efficientnet(f"efficientnet-b{i}") for i in range(4)},
    "efficientnet-lite0": _efficientnet_lite0,
    "vit": _vit,
}


# module-level names for the entry points in pyproject.toml ("resnet10-slim" -> resnet10_slim)
globals().update({name.replace("-", "_"): factory for name, factory in BACKBONES.items()})
GROUP = "medsight.backbones"


def check_backbone(backbone: str) -> None:
    """ConfigError listing the known names when ``backbone`` is not one (cheap: call it before loading data)."""
    registry.load(GROUP, backbone)


def build_classifier(backbone: str, spatial_dims: int, in_channels: int, n_outputs: int,
                     input_size: Sequence[int], dropout: float = 0.2) -> tuple[ClassifierNet, str]:
    """The named backbone with a fresh head; returns (model, default Grad-CAM layer name)."""
    check_backbone(backbone)
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    net, cam_layer = registry.load(GROUP, backbone)(spatial_dims, in_channels, tuple(int(s) for s in input_size))
    net.eval()
    with torch.no_grad():
        probe = net(torch.zeros(1, in_channels, *input_size))
    if isinstance(net, ResNetTrunk):  # returns a feature map: the evidence-map head goes on it
        return ClassifierNet(net, int(probe.shape[1]), n_outputs, dropout, evidence_map=True,
                             spatial_dims=spatial_dims), cam_layer
    sequence = isinstance(probe, tuple)
    feature_dim = int(torch.flatten(probe[0] if sequence else probe, 1).shape[1])
    return ClassifierNet(net, feature_dim, n_outputs, dropout, sequence_output=sequence), cam_layer


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (dotted path); ConfigError listing nearby names when it is absent."""
    modules = dict(model.named_modules())
    if name not in modules:
        near = [n for n in modules if n.count(".") <= 2][:20]
        raise ConfigError(f"model has no layer {name!r}; some layers: {', '.join(near)}")
    return modules[name]

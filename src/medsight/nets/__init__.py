"""Network registries and built-ins: segmentation networks, classification backbones, pretrained weights."""

"""Segmentation: the training task, losses, augmentation and sliding-window prediction of U-Net models."""

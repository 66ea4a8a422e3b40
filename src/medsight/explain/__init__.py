"""Explanations: Grad-CAM heatmaps (MONAI), PNG overlays, and checks that the heatmaps point at the evidence."""

"""Text drawn into a grey frame the way a scanner burns it in: one flat grey, antialiased edges blended over what
lies beneath, optionally turned 90 degrees (shared by the burned-in attack tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def draw_text(img: np.ndarray, text: str, xy: tuple[int, int], font: ImageFont.ImageFont, value: int,
              rotation: int = 0) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Draw ``text`` at ``xy`` (top-left) in grey ``value``; its box (x0, y0, x1, y1) and its coverage (0..1)."""
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    label = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(label).text((2 - x0, 2 - y0), text, fill=255, font=font)
    alpha = np.asarray(label.rotate(rotation, expand=True) if rotation else label, np.float64) / 255
    x, y = xy
    th, tw = alpha.shape
    region = img[y:y + th, x:x + tw].astype(np.float64)
    img[y:y + th, x:x + tw] = np.rint(region * (1 - alpha) + value * alpha).astype(np.uint8)
    return (x, y, x + tw, y + th), alpha

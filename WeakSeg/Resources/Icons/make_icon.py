"""Regenerate the WeakSeg icons: a filled organ (the full segmentation) completed from a few
scribbles (a stroke inside, a background stroke outside) and a dashed box.

    python WeakSeg/Resources/Icons/make_icon.py

writes WeakSeg/Resources/Icons/WeakSeg.png and WeakSeg.png (128 x 128, extension icon, same bytes)
and WeakSeg/SegmentEditorWeakAnnotationLib/SegmentEditorEffect.png (64 x 64, effect button).
Drawn at 4x and downsampled, so edges are anti-aliased.  Needs numpy and Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SCALE = 4
ORGAN_FILL = (216, 101, 79, 235)  # Slicer's first segment colour
ORGAN_EDGE = (150, 52, 38, 255)
OBJECT_SCRIBBLE = (255, 236, 92, 255)
BACKGROUND_SCRIBBLE = (92, 170, 230, 255)
BOX = (125, 125, 125, 255)  # mid grey: visible on light and dark themes


def organ_outline(size: int, n: int = 240) -> list[tuple[float, float]]:
    """A smooth kidney-like closed curve (polar radius with a few harmonics)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + 0.16 * np.cos(2 * t + 0.4) - 0.12 * np.cos(3 * t - 0.3) + 0.05 * np.sin(5 * t)
    cx, cy, scale = 0.53 * size, 0.52 * size, 0.30 * size
    return [(cx + scale * 1.08 * ri * np.cos(ti), cy + scale * 0.92 * ri * np.sin(ti)) for ri, ti in zip(r, t)]


def stroke(points: np.ndarray, draw: ImageDraw.ImageDraw, color, width: int) -> None:
    pts = [tuple(p) for p in points]
    draw.line(pts, fill=color, width=width, joint="curve")
    r = width / 2
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)


def dashed_rectangle(draw: ImageDraw.ImageDraw, box, color, width: int, dash: int) -> None:
    x0, y0, x1, y1 = box
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = float(np.hypot(bx - ax, by - ay))
        steps = int(length // (2 * dash)) + 1
        for i in range(steps):
            s0, s1 = 2 * i * dash / length, min((2 * i + 1) * dash / length, 1.0)
            if s0 >= 1.0:
                break
            draw.line((ax + (bx - ax) * s0, ay + (by - ay) * s0, ax + (bx - ax) * s1, ay + (by - ay) * s1),
                      fill=color, width=width)


def render(size: int) -> Image.Image:
    big = size * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    u = big / 128.0  # drawing unit: one pixel of the 128 px icon

    outline = organ_outline(big)
    xs, ys = zip(*outline)
    pad = 7 * u
    dashed_rectangle(draw, (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad), BOX, int(3 * u), int(9 * u))
    draw.polygon(outline, fill=ORGAN_FILL)
    draw.line(outline + [outline[0]], fill=ORGAN_EDGE, width=int(3.5 * u), joint="curve")

    t = np.linspace(0, 1, 60)
    inside = np.c_[(0.33 + 0.40 * t) * big, (0.56 + 0.07 * np.sin(2.6 * np.pi * t) - 0.10 * t) * big]
    stroke(inside, draw, (90, 40, 20, 255), int(10 * u))  # dark rim keeps the stroke readable at 32 px
    stroke(inside, draw, OBJECT_SCRIBBLE, int(6.5 * u))
    s = np.linspace(0, 1, 60)
    outside = np.c_[(0.10 + 0.42 * s) * big, (0.90 - 0.05 * np.sin(2.0 * np.pi * s)) * big]
    stroke(outside, draw, (20, 60, 100, 255), int(9 * u))
    stroke(outside, draw, BACKGROUND_SCRIBBLE, int(5.5 * u))
    return image.resize((size, size), Image.LANCZOS)


def main() -> None:
    icon = render(128)
    for path in (HERE / "WeakSeg.png", ROOT / "WeakSeg.png"):
        icon.save(path, optimize=True)
        print(f"wrote {path}")
    effect = ROOT / "WeakSeg" / "SegmentEditorWeakAnnotationLib" / "SegmentEditorEffect.png"
    render(64).save(effect, optimize=True)
    print(f"wrote {effect}")


if __name__ == "__main__":
    main()

"""Turn a dataset's crop window into a pixel box of the actual downloaded frame."""

from __future__ import annotations

from dataclasses import dataclass

from aniportrait.schema import CropSpec


@dataclass(frozen=True, slots=True)
class PixelBox:
    """An integer crop box ``x, y, w, h`` in source-frame pixels.

    ``border`` is the black margin (left, top, right, bottom; even numbers of pixels) added
    around the frame before cropping, for a box that reaches beyond the frame (``x`` and
    ``y`` are then negative or the box ends past the frame); all zero for a box inside it.
    """

    x: int
    y: int
    w: int
    h: int
    border: tuple[int, int, int, int] = (0, 0, 0, 0)

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


class CropError(ValueError):
    """The metadata's crop window does not fit the video."""

    reason = "crop_out_of_frame"


def resolve_crop(spec: CropSpec | None, frame_w: int, frame_h: int) -> PixelBox:
    """Pixel box for ``spec`` on a frame of ``frame_w`` x ``frame_h``.

    * ``None``: the whole frame (the resize step then crops to fill the square).
    * ``pixels``: the box scaled from the reference resolution to the actual one (a
      download at another resolution than the metadata's keeps the same face), then
      clamped to the frame.
    * ``normalized``: CelebV-HQ's rule: expand each side, clamp to [0, 1], scale with
      rounding, then a centred square of side ``2 * (min(h, w) // 2)``.
    * ``pad``: the box is kept whole, its part beyond the frame black (``border``).
    """
    if spec is None:
        return PixelBox(0, 0, frame_w, frame_h)
    if spec.kind == "pixels":
        box = _scale_pixels(spec, frame_w, frame_h)
    else:
        box = _normalized(spec, frame_w, frame_h)
    x0, y0, x1, y1 = (max(0, box[0]), max(0, box[1]), min(frame_w, box[2]), min(frame_h, box[3]))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise CropError(
            f"crop window {list(box)} lies outside the {frame_w}x{frame_h} video "
            f"(metadata box {spec.x0:g},{spec.y0:g}-{spec.x1:g},{spec.y1:g})"
        )
    if spec.pad:
        return _padded(box, frame_w, frame_h)
    return PixelBox(x0, y0, x1 - x0, y1 - y0)


def _padded(box: tuple[int, int, int, int], frame_w: int, frame_h: int) -> PixelBox:
    """The whole ``box`` with the black border it needs, rounded up to even pixels (a 4:2:0
    frame is padded in whole chroma samples, so an odd margin would move the picture).

    The padded frame is even-sized too: ffmpeg rounds an odd padded size of a 4:2:0 frame
    down, below the picture, and fails. An odd frame gets one more column on the right
    (row at the bottom), outside the box.
    """
    def even(margin: int) -> int:
        return max(0, margin) + max(0, margin) % 2

    x0, y0, x1, y1 = box
    left, top, right, bottom = even(-x0), even(-y0), even(x1 - frame_w), even(y1 - frame_h)
    if left or top or right or bottom:
        right += frame_w % 2
        bottom += frame_h % 2
    return PixelBox(x0, y0, x1 - x0, y1 - y0, (left, top, right, bottom))


def _scale_pixels(spec: CropSpec, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    sy = frame_h / spec.ref_height if spec.ref_height else None
    sx = frame_w / spec.ref_width if spec.ref_width else None
    sx = sx or sy or 1.0
    sy = sy or sx
    return (round(spec.x0 * sx), round(spec.y0 * sy), round(spec.x1 * sx), round(spec.y1 * sy))


def _normalized(spec: CropSpec, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    e = spec.expand
    top, bottom = max(spec.y0 - e, 0.0), min(spec.y1 + e, 1.0)
    left, right = max(spec.x0 - e, 0.0), min(spec.x1 + e, 1.0)
    top_px, bottom_px = round(top * frame_h), round(bottom * frame_h)
    left_px, right_px = round(left * frame_w), round(right * frame_w)
    if spec.square:
        half = min(bottom_px - top_px, right_px - left_px) // 2
        cy, cx = (top_px + bottom_px) / 2, (left_px + right_px) / 2
        top_px, bottom_px = int(cy - half), int(cy + half)
        left_px, right_px = int(cx - half), int(cx + half)
    return (left_px, top_px, right_px, bottom_px)

"""The official AniPortrait lip-coloured pose image (PoseGuider input), pixel-identical.

The official code fills a MediaPipe ``NormalizedLandmarkList`` (float32 fields) and
calls ``mediapipe.solutions.drawing_utils.draw_landmarks`` on a 512x512 canvas, then
resizes to the frame size. This module reproduces that without MediaPipe.
"""

from __future__ import annotations

import cv2
import numpy as np

Edge = tuple[int, int]
Color = tuple[int, int, int]

#: Side of the square canvas the official code draws on before resizing.
CANVAS = 512
THICKNESS = 2

#: The face oval without the forehead, in the official order.
FACE_OVAL_NO_FOREHEAD: tuple[Edge, ...] = (
    (176, 149), (150, 136), (356, 454), (58, 132), (152, 148), (361, 288), (251, 389),
    (132, 93), (389, 356), (400, 377), (136, 172), (377, 152), (323, 361), (172, 58),
    (454, 323), (365, 379), (379, 378), (148, 176), (93, 234), (397, 365), (149, 150),
    (288, 397), (234, 127), (378, 400), (127, 162), (162, 21),
)
# MediaPipe's face-mesh connection sets (face_mesh_connections.py, Apache-2.0). All
# edges of one set share a colour, so the order inside a set does not change pixels.
FACEMESH_LEFT_EYE: tuple[Edge, ...] = (
    (263, 249), (249, 390), (390, 373), (373, 374), (374, 380), (380, 381), (381, 382),
    (382, 362), (263, 466), (466, 388), (388, 387), (387, 386), (386, 385), (385, 384),
    (384, 398), (398, 362),
)
FACEMESH_LEFT_EYEBROW: tuple[Edge, ...] = (
    (276, 283), (283, 282), (282, 295), (295, 285), (300, 293), (293, 334), (334, 296),
    (296, 336),
)
FACEMESH_RIGHT_EYE: tuple[Edge, ...] = (
    (33, 7), (7, 163), (163, 144), (144, 145), (145, 153), (153, 154), (154, 155),
    (155, 133), (33, 246), (246, 161), (161, 160), (160, 159), (159, 158), (158, 157),
    (157, 173), (173, 133),
)
FACEMESH_RIGHT_EYEBROW: tuple[Edge, ...] = (
    (46, 53), (53, 52), (52, 65), (65, 55), (70, 63), (63, 105), (105, 66), (66, 107),
)


def _polyline(*idx: int) -> tuple[Edge, ...]:
    return tuple(zip(idx[:-1], idx[1:]))


#: (edges, colour) in drawing order. Colours are raw channel tuples, never swapped.
POSE_IMAGE_PARTS: tuple[tuple[tuple[Edge, ...], Color], ...] = (
    (FACE_OVAL_NO_FOREHEAD, (10, 200, 10)),
    (FACEMESH_LEFT_EYE, (180, 200, 10)),
    (FACEMESH_LEFT_EYEBROW, (180, 220, 10)),
    (FACEMESH_RIGHT_EYE, (10, 200, 180)),
    (FACEMESH_RIGHT_EYEBROW, (10, 220, 180)),
    (_polyline(61, 146, 91, 181, 84, 17), (10, 180, 20)),
    (_polyline(17, 314, 405, 321, 375, 291), (20, 10, 180)),
    (_polyline(78, 95, 88, 178, 87, 14), (100, 100, 30)),
    (_polyline(14, 317, 402, 318, 324, 308), (100, 150, 50)),
    (_polyline(61, 185, 40, 39, 37, 0), (20, 80, 100)),
    (_polyline(0, 267, 269, 270, 409, 291), (80, 100, 20)),
    (_polyline(78, 191, 80, 81, 82, 13), (120, 100, 200)),
    (_polyline(13, 312, 311, 310, 415, 308), (150, 120, 100)),
)


def canvas_pixels(points: np.ndarray, width: int, height: int, normalized: bool) -> np.ndarray:
    """Integer canvas pixels (N, 2) of ``points``; -1 marks a point that is not drawn.

    As MediaPipe's drawing utils: coordinates normalised (pixel input divided by W, H)
    and rounded to float32, kept only inside [0, 1], ``px = min(floor(x * 512), 511)``.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    if not normalized:
        pts = pts / np.array([width, height], dtype=np.float64)
    # Clipping first keeps the cast finite; it cannot move a point across [0, 1].
    pts = np.clip(np.nan_to_num(pts, nan=-1.0), -1.0, 2.0).astype(np.float32).astype(np.float64)
    inside = np.all((pts >= 0.0) & (pts <= 1.0), axis=1)
    pix = np.minimum(np.floor(pts * CANVAS), CANVAS - 1).astype(np.int64)
    pix[~inside] = -1
    return pix


def draw_pose_image(points: np.ndarray, width: int, height: int, normalized: bool) -> np.ndarray:
    """The official lip-coloured pose image (height, width, 3) uint8 of one face.

    ``points`` are face landmarks (>= 468, 2+): normalised to [0, 1] when ``normalized``,
    else pixels of a ``width`` x ``height`` frame. Lines (thickness 2, 8-connected) are
    drawn on a 512x512 black canvas, which is then resized (bilinear) to the frame size.
    """
    pix = canvas_pixels(points, width, height, normalized)
    image = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    for edges, color in POSE_IMAGE_PARTS:
        for start, end in edges:
            if pix[start, 0] >= 0 and pix[end, 0] >= 0:
                p0 = (int(pix[start, 0]), int(pix[start, 1]))
                p1 = (int(pix[end, 0]), int(pix[end, 1]))
                cv2.line(image, p0, p1, color, THICKNESS, cv2.LINE_8)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)

"""The same face followed across a video's frames, its probabilities smoothed over a window.

A detector sees each frame alone, and a classifier's top class on a still face flips between
near ties from frame to frame. Tracks join each frame's boxes to the previous ones by overlap
(intersection over union, matched greedily from the largest overlap down, as SORT-style
trackers without motion models do); a track missing for more than `max_missed` frames ends.
Each face's smoothed probabilities are the mean over its track's last `window` frames
(window 1: the raw values). The summary counts, per track, the frames in which each smoothed
emotion was on top.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from trainer.inference.faces.detection import Box

DEFAULT_WINDOW = 5
MIN_OVERLAP = 0.3  # IoU below which two boxes are taken for two faces
MAX_MISSED = 5  # frames a face may go undetected and keep its track


def overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(width, 0) * max(height, 0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class _Track:
    number: int
    box: Box
    recent: collections.deque  # the last `window` probability rows
    missed: int = 0
    frames: int = 0
    first_frame: int = 0
    last_frame: int = 0
    top_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class FaceTracker:
    """Call `update` once per frame read, in order; `summary` at the end."""

    def __init__(self, class_names: list[str], window: int = DEFAULT_WINDOW):
        if window < 1:
            raise ValueError(f"the smoothing window must be >= 1 frame, got {window}")
        self.class_names, self.window = class_names, window
        self._live: list[_Track] = []
        self._ended: list[_Track] = []

    def update(self, frame: int, boxes: list[Box], probabilities: np.ndarray
               ) -> list[tuple[int, np.ndarray]]:
        """(track number, smoothed probabilities) of each face of this frame, in box order."""
        owners = self._match(boxes)
        result, seen = [], set()
        for i, box in enumerate(boxes):
            track = owners.get(i) or self._start(box, frame)
            track.box, track.missed, track.last_frame = box, 0, frame
            track.recent.append(np.asarray(probabilities[i], np.float64))
            track.frames += 1
            smoothed = np.mean(track.recent, axis=0)
            track.top_counts[self.class_names[int(np.argmax(smoothed))]] += 1
            result.append((track.number, smoothed))
            seen.add(track.number)
        self._age(seen)
        return result

    def summary(self) -> list[dict]:
        """Per track: frames seen, first and last frame, the dominant smoothed emotion and the
        share of frames each emotion was on top (shares sum to 1)."""
        tracks = sorted(self._ended + self._live, key=lambda t: t.number)
        return [{"track": t.number, "frames": t.frames, "first_frame": t.first_frame,
                 "last_frame": t.last_frame,
                 "emotion": t.top_counts.most_common(1)[0][0],
                 "shares": {name: round(t.top_counts[name] / t.frames, 6)
                            for name in self.class_names}}
                for t in tracks]

    def _match(self, boxes: list[Box]) -> dict[int, _Track]:
        pairs = sorted(((overlap(box, track.box), i, j) for i, box in enumerate(boxes)
                        for j, track in enumerate(self._live)), reverse=True)
        owners, taken = {}, set()
        for score, i, j in pairs:
            if score < MIN_OVERLAP:
                break
            if i not in owners and j not in taken:
                owners[i] = self._live[j]
                taken.add(j)
        return owners

    def _start(self, box: Box, frame: int) -> _Track:
        number = len(self._live) + len(self._ended)
        track = _Track(number, box, collections.deque(maxlen=self.window), first_frame=frame)
        self._live.append(track)
        return track

    def _age(self, seen: set[int]) -> None:
        for track in list(self._live):
            if track.number in seen:
                continue
            track.missed += 1
            if track.missed > MAX_MISSED:
                self._live.remove(track)
                self._ended.append(track)

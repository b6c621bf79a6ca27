"""trainer.inference.tracking: boxes joined across frames by overlap, probabilities smoothed."""

import numpy as np
import pytest

from trainer.inference.faces.detection import Box
from trainer.inference.tracking import FaceTracker, overlap

CLASSES = ["sad", "neutral", "happy"]


def test_overlap_is_intersection_over_union():
    assert overlap(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert overlap(Box(0, 0, 10, 10), Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert overlap(Box(0, 0, 10, 10), Box(20, 20, 5, 5)) == 0.0


def test_a_flickering_still_face_gets_one_track_and_a_steady_smoothed_label():
    """Raw top class flips sad/neutral frame to frame (as a near tie does: sad 0.50 then 0.42,
    neutral 0.38 then 0.46); the window's mean keeps sad, on top on average."""
    tracker = FaceTracker(CLASSES, window=5)
    rng = np.random.default_rng(0)
    raw_tops, smoothed_tops = [], []
    for frame in range(30):
        sad = 0.50 if frame % 2 else 0.42
        row = np.array([sad, 0.88 - sad, 0.12]) + rng.normal(0, 0.005, 3)
        [(track, smoothed)] = tracker.update(frame, [Box(100 + frame % 3, 80, 60, 60)], [row])
        assert track == 0
        raw_tops.append(int(np.argmax(row)))
        smoothed_tops.append(int(np.argmax(smoothed)))
    assert len(set(raw_tops)) == 2 and set(smoothed_tops[4:]) == {0}
    [summary] = tracker.summary()
    assert summary["frames"] == 30 and sum(summary["shares"].values()) == pytest.approx(1)
    assert summary["shares"][summary["emotion"]] >= 26 / 30


def test_two_faces_keep_their_tracks_when_listed_in_another_order_and_a_new_one_starts():
    tracker = FaceTracker(CLASSES, window=1)
    left, right = Box(10, 10, 50, 50), Box(200, 10, 50, 50)
    happy, sad = np.array([0, 0, 1.0]), np.array([1.0, 0, 0])
    assert [t for t, _ in tracker.update(0, [left, right], [happy, sad])] == [0, 1]
    assert [t for t, _ in tracker.update(1, [right, left], [sad, happy])] == [1, 0]
    far = Box(400, 300, 50, 50)
    assert [t for t, _ in tracker.update(2, [far], [happy])] == [2]
    summaries = tracker.summary()
    assert [(s["track"], s["frames"], s["emotion"]) for s in summaries] == [
        (0, 2, "happy"), (1, 2, "sad"), (2, 1, "happy")]


def test_a_face_missing_longer_than_its_grace_starts_a_new_track():
    tracker = FaceTracker(CLASSES)
    box, row = Box(10, 10, 50, 50), np.array([0.2, 0.3, 0.5])
    tracker.update(0, [box], [row])
    for frame in range(1, 4):
        tracker.update(frame, [], np.zeros((0, 3)))
    assert tracker.update(4, [box], [row])[0][0] == 0  # back within 5 frames: same track
    for frame in range(5, 11):
        tracker.update(frame, [], np.zeros((0, 3)))
    assert tracker.update(11, [box], [row])[0][0] == 1


def test_a_window_below_one_frame_is_refused():
    with pytest.raises(ValueError, match="window must be >= 1"):
        FaceTracker(CLASSES, window=0)

"""The two face detectors on a real photo and on composites with known faces, and alignment.

Counts are those measured with the pinned OpenCV and mtcnn (constraints.txt); both detectors
are deterministic, so they are asserted exactly. The README's table has the timings.
"""

import numpy as np
import pytest

from tests.trainer.inference import composites
from trainer.inference.faces import detection, face_types
from trainer.inference.faces.alignment import (
    TEMPLATE_48,
    align_face,
    alignment_matrix,
    eye_tilt_degrees,
    template,
    transform_points,
)


@pytest.fixture(scope="module")
def hopper():
    return composites.hopper()


def _found(composite, detector, min_face_size=detection.DEFAULT_MIN_FACE_SIZE):
    faces = detection.detect(composite.photo, min_face_size, detector)
    return composites.score([face.box for face in faces], composite.centres, composite.face_size)


def test_mtcnn_finds_the_real_face_and_its_five_landmarks(hopper):
    [face] = detection.detect(hopper, detector="mtcnn")
    centre = (face.box.x + face.box.width / 2, face.box.y + face.box.height / 2)
    assert np.allclose(centre, composites.HOPPER_FACE_CENTRE, atol=30)
    assert face.confidence > 0.95
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert list(face.landmarks_dict()) == list(face_types.LANDMARK_NAMES)


# (composite, MTCNN (found, false hits), Haar (found, false hits)), as measured.
CASES = [
    (composites.several, (3, 0), (1, 0)),  # 3 faces at 0 / +25 / -25 degrees: Haar gets 0 deg
    (lambda: composites.tilted(25.0), (1, 0), (0, 0)),
    (lambda: composites.small(40.0), (1, 0), (0, 0)),  # a 40 px face in a 1000x800 scene
    (composites.dark, (1, 0), (1, 0)),  # a quarter of the light, noise: both (Haar equalises)
]


@pytest.mark.parametrize(("make", "mtcnn", "haar"), CASES)
def test_mtcnn_finds_the_composite_faces_haar_misses(make, mtcnn, haar):
    composite = make()
    assert _found(composite, "mtcnn") == mtcnn, composite.name
    assert _found(composite, "haar") == haar, composite.name


def test_no_face_in_a_plain_wall_or_noise():
    rng = np.random.default_rng(0)
    for photo in (np.full((300, 400, 3), 200, np.uint8),
                  rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)):
        for name in detection.DETECTOR_CHOICES:
            assert detection.detect(photo, detector=name) == []


def test_min_face_size_above_mtcnns_safe_pyramid_start_still_finds_faces(hopper):
    # mtcnn 1.0.0 itself finds nothing once min_face_size > ~23 px (its pyramid runs below
    # PNet's 12 px window); MtcnnDetector shrinks the photo instead.
    assert len(detection.detect(hopper, min_face_size=150, detector="mtcnn")) == 1
    assert detection.detect(hopper, min_face_size=300, detector="mtcnn") == []


def test_alignment_levels_a_face_turned_20_degrees(hopper):
    turned = composites.rotated(hopper, 20.0)
    [face] = detection.detect(turned, detector="mtcnn")
    assert eye_tilt_degrees(face.landmarks) == pytest.approx(-22.6, abs=3)  # 20 + hers, 2.6

    matrix = alignment_matrix(face.landmarks)
    assert abs(eye_tilt_degrees(transform_points(matrix, face.landmarks))) < 2
    # What the model sees: the aligned crop. Found again in it (5x up), the eyes are level.
    crop = detection.crop_faces(turned, [face])[0]
    big = np.kron(crop, np.ones((5, 5), np.uint8))
    [again] = detection.detect(big, min_face_size=100, detector="mtcnn")
    assert abs(eye_tilt_degrees(again.landmarks)) < 5
    assert np.abs(again.landmarks / 5 - TEMPLATE_48).max() < 3  # where the template puts them


def test_aligned_crop_frames_the_face_as_the_haar_crop_does(hopper):
    [haar_box] = detection.detect_faces(detection.to_gray(hopper))
    haar_crop = detection.crop_face(detection.to_gray(hopper), haar_box)
    [face] = detection.detect(hopper, detector="mtcnn")
    aligned = align_face(detection.to_gray(hopper), face.landmarks)
    correlation = np.corrcoef(haar_crop.ravel().astype(float), aligned.ravel().astype(float))
    assert aligned.shape == (48, 48) and correlation[0, 1] > 0.8


def test_a_larger_margin_zooms_the_template_out():
    wide = template(margin=0.3)
    eye_distance = np.linalg.norm(wide[1] - wide[0])
    assert eye_distance == pytest.approx(15.5 * 1.2 / 1.6)
    assert np.allclose(wide.mean(axis=0), TEMPLATE_48.mean(axis=0) * 0.75 + 24 * 0.25)


def test_degenerate_landmarks_fall_back_to_the_box_crop(hopper):
    box = detection.Box(179, 115, 168, 216)
    point = np.full((5, 2), 250.0, np.float32)
    assert align_face(detection.to_gray(hopper), point) is None
    crops = detection.crop_faces(hopper, [detection.DetectedFace(box, point)])
    assert np.array_equal(crops[0], detection.crop_face(detection.to_gray(hopper), box))


def test_unknown_detector_is_rejected(hopper):
    with pytest.raises(ValueError, match="Unknown face detector 'yolo'"):
        detection.detect(hopper, detector="yolo")

"""Unit tests of the newest-only frame pairer and the rate meter (pure core, no rclpy)."""

import math

import pytest

from sim2real_vla_ros.core.perception.camera_pairing import (
    REASON_INCOMPLETE,
    REASON_OK,
    REASON_SKEW,
    REASON_STALE,
    FramePairer,
    RateMeter,
)

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def make_pairer(max_skew_s=0.02, max_age_s=0.5):
    return FramePairer(CAMERAS, max_skew_s=max_skew_s, max_age_s=max_age_s)


def add_all(pairer, stamps, tag=""):
    for camera, stamp in zip(CAMERAS, stamps):
        assert pairer.add(camera, stamp, f"{camera}@{stamp}{tag}")


def test_frames_within_skew_form_one_set():
    pairer = make_pairer()
    add_all(pairer, (10.000, 10.010, 10.015))
    frame_set = pairer.newest_set(now_s=10.05)
    assert frame_set is not None
    assert frame_set.set_id == 1
    assert frame_set.stamps_s == {"cam_high": 10.000, "cam_left_wrist": 10.010, "cam_right_wrist": 10.015}
    assert frame_set.frame("cam_left_wrist") == "cam_left_wrist@10.01"
    assert frame_set.oldest_stamp_s == 10.000
    assert frame_set.skew_s == pytest.approx(0.015)
    assert pairer.last_reason == REASON_OK
    assert pairer.stats()["sets_emitted"] == 1
    assert pairer.stats()["last_skew_s"] == pytest.approx(0.015)


def test_skew_exactly_at_limit_is_accepted():
    pairer = make_pairer(max_skew_s=0.25)  # 0.25 and the stamps are exact binary fractions
    add_all(pairer, (1.0, 1.25, 1.125))
    assert pairer.newest_set(now_s=1.3) is not None


def test_too_skewed_drops_the_lagging_frame_and_reports_the_camera():
    pairer = make_pairer()
    add_all(pairer, (10.000, 10.050, 10.055))  # cam_high lags the wrists by 50 ms
    assert pairer.newest_set(now_s=10.06) is None
    assert pairer.last_reason == REASON_SKEW
    assert pairer.lagging_cameras == ("cam_high",)
    stats = pairer.stats()
    assert stats["dropped"]["skew"] == 1
    assert stats["dropped_by_camera"]["cam_high"]["skew"] == 1
    assert stats["lagging_cameras"] == ["cam_high"]
    assert stats["last_skew_s"] == pytest.approx(0.055)
    # The wrists' frames stay pending and pair with cam_high's next frame.
    pairer.add("cam_high", 10.060, "high-new")
    frame_set = pairer.newest_set(now_s=10.07)
    assert frame_set is not None
    assert frame_set.stamps_s == {"cam_high": 10.060, "cam_left_wrist": 10.050, "cam_right_wrist": 10.055}


def test_only_the_newest_frame_per_camera_is_kept():
    pairer = make_pairer()
    add_all(pairer, (1.000, 1.001, 1.002), tag="-old")
    add_all(pairer, (1.033, 1.034, 1.035), tag="-new")
    frame_set = pairer.newest_set(now_s=1.04)
    assert frame_set is not None
    assert all(item.frame.endswith("-new") for item in frame_set.frames.values())
    assert pairer.stats()["overwritten"] == {name: 1 for name in CAMERAS}
    # No backlog: the old frames are gone, nothing else is handed out.
    assert pairer.newest_set(now_s=1.04) is None


def test_each_set_is_returned_once_and_every_camera_needs_a_fresh_frame():
    pairer = make_pairer()
    add_all(pairer, (2.000, 2.001, 2.002))
    assert pairer.newest_set(now_s=2.01) is not None
    assert pairer.newest_set(now_s=2.02) is None
    assert pairer.last_reason == REASON_INCOMPLETE
    assert pairer.missing_cameras == CAMERAS
    pairer.add("cam_high", 2.033, "high")
    assert pairer.newest_set(now_s=2.04) is None  # the wrists' frames were already used
    assert pairer.missing_cameras == ("cam_left_wrist", "cam_right_wrist")
    pairer.add("cam_left_wrist", 2.034, "left")
    pairer.add("cam_right_wrist", 2.035, "right")
    frame_set = pairer.newest_set(now_s=2.04)
    assert frame_set is not None and frame_set.set_id == 2
    assert pairer.stats()["sets_emitted"] == 2


def test_out_of_order_and_duplicate_stamps_are_dropped_and_counted():
    pairer = make_pairer()
    assert pairer.add("cam_high", 5.0, "a")
    assert not pairer.add("cam_high", 4.9, "older")
    assert not pairer.add("cam_high", 5.0, "same")
    assert not pairer.add("cam_high", math.nan, "nan")
    stats = pairer.stats()
    assert stats["received"]["cam_high"] == 4
    assert stats["dropped"]["out_of_order"] == 1
    assert stats["dropped"]["duplicate"] == 1
    assert stats["dropped"]["invalid_stamp"] == 1
    pairer.add("cam_left_wrist", 5.0, "l")
    pairer.add("cam_right_wrist", 5.0, "r")
    frame_set = pairer.newest_set(now_s=5.0)
    assert frame_set is not None and frame_set.frame("cam_high") == "a"
    # After the set is consumed an older stamp is still out of order (the history is kept).
    assert not pairer.add("cam_high", 4.95, "late")
    assert pairer.stats()["dropped"]["out_of_order"] == 2


def test_stale_frames_give_none_with_a_counted_reason():
    pairer = make_pairer(max_age_s=0.5)
    add_all(pairer, (3.0, 3.0, 3.0))
    assert pairer.newest_set(now_s=3.6) is None  # age 0.6 s > 0.5 s
    assert pairer.last_reason == REASON_STALE
    assert pairer.stats()["dropped"]["stale"] == 3
    # Dropped once: the next poll has nothing left to drop or count.
    assert pairer.newest_set(now_s=3.7) is None
    assert pairer.last_reason == REASON_INCOMPLETE
    assert pairer.stats()["dropped"]["stale"] == 3


def test_one_stale_camera_is_reported_missing():
    pairer = make_pairer(max_age_s=0.5)
    pairer.add("cam_high", 1.0, "h")
    pairer.add("cam_left_wrist", 1.6, "l")
    pairer.add("cam_right_wrist", 1.6, "r")
    assert pairer.newest_set(now_s=1.61) is None
    assert pairer.last_reason == REASON_STALE
    assert pairer.missing_cameras == ("cam_high",)
    assert pairer.stats()["dropped_by_camera"]["cam_high"]["stale"] == 1


def test_bad_configuration_and_unknown_camera_raise_clear_errors():
    with pytest.raises(ValueError, match="camera_names"):
        FramePairer((), 0.02, 0.5)
    with pytest.raises(ValueError, match="duplicate"):
        FramePairer(("a", "a"), 0.02, 0.5)
    with pytest.raises(ValueError, match="max_skew_s"):
        FramePairer(CAMERAS, -0.1, 0.5)
    with pytest.raises(ValueError, match="max_age_s"):
        FramePairer(CAMERAS, 0.02, 0.0)
    with pytest.raises(ValueError, match="unknown camera 'cam_top'"):
        make_pairer().add("cam_top", 1.0, None)


def test_reset_forgets_stamps_after_a_time_jump_back():
    pairer = make_pairer()
    add_all(pairer, (100.0, 100.0, 100.0))
    pairer.reset()
    add_all(pairer, (1.0, 1.0, 1.0))
    assert pairer.newest_set(now_s=1.0) is not None


def test_rate_meter_measures_a_30_hz_stream():
    meter = RateMeter(window_s=1.0)
    for frame in range(61):  # 0 .. 2 s at 30 Hz
        assert meter.add(frame / 30.0)
    # Stamps in [1.0, 2.0]: frames 30..60, 30 intervals over 1 s.
    assert meter.rate_hz(now_s=2.0) == pytest.approx(30.0)
    assert meter.max_gap_s(now_s=2.0) == pytest.approx(1 / 30)
    assert meter.age_s(now_s=2.1) == pytest.approx(0.1)


def test_rate_meter_sees_a_gap_and_silence():
    meter = RateMeter(window_s=1.0)
    for stamp in (0.0, 0.1, 0.2, 0.5, 0.6):
        meter.add(stamp)
    # 4 intervals over 0.6 s; the largest gap is the missing 0.3 and 0.4 frames.
    assert meter.rate_hz(now_s=0.6) == pytest.approx(4 / 0.6)
    assert meter.max_gap_s(now_s=0.6) == pytest.approx(0.3)
    assert meter.rate_hz(now_s=1.65) == 0.0  # only 0.6 left in the window
    assert meter.max_gap_s(now_s=1.65) is None
    assert meter.age_s(now_s=5.0) == pytest.approx(4.4)


def test_rate_meter_rejects_out_of_order_and_non_finite_stamps():
    meter = RateMeter(window_s=1.0)
    assert meter.add(1.0)
    assert not meter.add(0.9)
    assert not meter.add(1.0)
    assert not meter.add(math.inf)
    assert meter.rejected == 3
    assert RateMeter().age_s(now_s=1.0) is None
    with pytest.raises(ValueError, match="window_s"):
        RateMeter(window_s=0.0)

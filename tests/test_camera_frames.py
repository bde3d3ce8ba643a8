"""The camera simulator's frames and ground truth, and gated's frame sources reading it."""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from gated.errors import DeviceUnavailable
from gated.iso6346 import check_digit
from ocr.frames import Frame, ImageFolderSource, MjpegHttpSource, open_source, select_frames
from simulators.camera_frames import (
    FrameSpec,
    MjpegCameraSimulator,
    container_number,
    encode_jpeg,
    random_spec,
    render_frame,
    write_dataset,
)


def _read_until(source: MjpegHttpSource, predicate: object, timeout: float = 10.0) -> Frame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = source.read(timeout=1.0)
        if frame is not None and callable(predicate) and predicate(frame):
            return frame
    raise AssertionError("the expected frame never came")


def test_rendering_is_deterministic_from_the_seed() -> None:
    spec = random_spec(np.random.default_rng(7))
    first, truth_a = render_frame(spec, np.random.default_rng(3))
    second, truth_b = render_frame(spec, np.random.default_rng(3))
    other, _ = render_frame(spec, np.random.default_rng(4))
    assert first.shape == (720, 1280, 3) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert truth_a == truth_b
    assert not np.array_equal(first, other)
    assert random_spec(np.random.default_rng(7)) == spec


def test_ground_truth_check_digits_valid_and_deliberately_wrong() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        good = container_number(rng)
        bad = container_number(rng, valid=False)
        assert int(good[10]) == check_digit(good[:10])
        assert int(bad[10]) != check_digit(bad[:10])
    spec = FrameSpec(container_numbers=("CSQU3054384",), size_type="42G1")
    _, truth = render_frame(spec, rng)
    assert truth.container_numbers == ("CSQU3054384",)
    assert truth.marks[0].check_digit_valid is False
    assert "invalid_check_digit" in truth.conditions
    _, truth = render_frame(replace(spec, container_numbers=("CSQU3054383",)), rng)
    assert truth.marks[0].check_digit_valid is True


@pytest.mark.parametrize("layout", ["horizontal", "two_lines", "vertical"])
def test_char_height_within_the_requested_range_and_marks_in_frame(layout: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(4):
        spec = replace(random_spec(rng, char_height=(32.0, 48.0), two_containers=0.0), layout=layout)
        _, truth = render_frame(spec, rng)
        mark = truth.marks[0]
        assert 32.0 <= mark.char_height_px <= 48.0
        assert mark.char_height_min_px <= mark.char_height_px <= mark.char_height_max_px
        x0, y0, x1, y1 = mark.bbox
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720


def test_two_containers_on_one_chassis_are_both_in_frame() -> None:
    rng = np.random.default_rng(9)
    numbers = (container_number(rng), container_number(rng, valid=False))
    spec = FrameSpec(container_numbers=numbers, view="side", char_height_px=36.0, view_angle_deg=10.0)
    _, truth = render_frame(spec, rng)
    assert truth.container_numbers == numbers
    assert [m.check_digit_valid for m in truth.marks] == [True, False]
    for mark in truth.marks:
        x0, y0, x1, y1 = mark.bbox
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
        assert mark.char_height_px >= 25
    with pytest.raises(ValueError):
        FrameSpec(container_numbers=numbers, view="rear")
    with pytest.raises(ValueError):
        FrameSpec(view_angle_deg=40.0)


def test_written_dataset_has_a_label_for_every_file(tmp_path: Path) -> None:
    labels = write_dataset(tmp_path / "set", 6, seed=2)
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = sorted(p.name for p in (tmp_path / "set").iterdir() if p.suffix == ".jpg")
    assert sorted(row["file"] for row in rows) == images and len(images) == 6
    for row in rows:
        numbers = row["container_numbers"].split()
        flags = row["check_digit_valid"].split()
        assert len(numbers) == len(flags) >= 1
        for number, flag in zip(numbers, flags, strict=True):
            assert (int(number[10]) == check_digit(number[:10])) == (flag == "true")
        assert row["layout"] in ("horizontal", "two_lines", "vertical")
        image = cv2.imread(str(tmp_path / "set" / row["file"]))
        assert image is not None and image.shape == (720, 1280, 3)


def _mean_colour(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).mean(axis=0)


def test_mjpeg_simulator_read_by_the_http_source() -> None:
    spec = FrameSpec(paint=(150, 42, 34), view="side", char_height_px=40.0)
    with MjpegCameraSimulator(fps=20, seed=1) as camera:
        source = open_source(camera.url)
        assert isinstance(source, MjpegHttpSource)
        with source:
            first = source.read(timeout=5.0)
            assert first is not None and first.image.shape == (720, 1280, 3)
            empty = _mean_colour(first.image)
            camera.show(spec)

            def shows_red(frame: Frame) -> bool:
                b, g, r = _mean_colour(frame.image)
                return bool(r > g + 25 and r > b + 25)

            assert not shows_red(first)
            frame = _read_until(source, shows_red)
            assert frame.source == camera.url and frame.index > first.index
            assert not np.allclose(_mean_colour(frame.image), empty, atol=5)
            assert camera.truths[-1].container_numbers == spec.container_numbers
            assert source.protocol_errors == 0


def test_mjpeg_without_content_length_is_split_at_the_boundary() -> None:
    with (
        MjpegCameraSimulator(fps=20, seed=2, part_content_length=False) as camera,
        open_source(camera.url) as source,
    ):
        frames = [source.read(timeout=5.0) for _ in range(3)]
        assert all(f is not None and f.image.shape == (720, 1280, 3) for f in frames)
        assert source.protocol_errors == 0


def test_corrupt_part_is_counted_and_the_stream_goes_on() -> None:
    with MjpegCameraSimulator(fps=20, seed=3) as camera, open_source(camera.url) as source:
        assert source.read(timeout=5.0) is not None
        camera.send_corrupt(2)
        deadline = time.monotonic() + 10
        while source.protocol_errors < 2 and time.monotonic() < deadline:
            source.read(timeout=0.5)
        assert source.protocol_errors == 2
        assert source.last_error is not None
        after = source.read(timeout=5.0)
        assert after is not None and after.image.shape == (720, 1280, 3)


def test_server_stop_is_device_unavailable() -> None:
    camera = MjpegCameraSimulator(fps=20, seed=4).start()
    camera.start()
    source = open_source(camera.url)
    try:
        assert source.read(timeout=5.0) is not None
        camera.stop()
        camera.stop()
        with pytest.raises(DeviceUnavailable):
            for _ in range(40):
                source.read(timeout=0.5)
        with pytest.raises(DeviceUnavailable):
            source.read(timeout=0.1)
        with pytest.raises(DeviceUnavailable):
            open_source(camera.url)
    finally:
        source.close()
        camera.stop()


def test_snapshot_is_one_jpeg() -> None:
    import urllib.request

    with (
        MjpegCameraSimulator(seed=5) as camera,
        urllib.request.urlopen(camera.snapshot_url, timeout=5) as reply,
    ):
        assert reply.headers["Content-Type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(reply.read(), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (720, 1280, 3)


def test_image_folder_source_picks_up_new_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    bgr, _ = render_frame(FrameSpec(), rng)
    (tmp_path / "a.jpg").write_bytes(encode_jpeg(bgr))
    with open_source(tmp_path) as source:
        assert isinstance(source, ImageFolderSource)
        first = source.read(timeout=1.0)
        assert first is not None and first.image.shape == (720, 1280, 3)
        assert source.read(timeout=0.3) is None
        (tmp_path / ".b.jpg.part").write_bytes(b"half")
        (tmp_path / "b.jpg").write_bytes(encode_jpeg(bgr[::2, ::2].copy()))
        second = source.read(timeout=2.0)
        assert second is not None and second.image.shape == (360, 640, 3)
        assert second.index == first.index + 1
        (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        old = time.time() - 60
        import os

        os.utime(tmp_path / "c.jpg", (old, old))
        assert source.read(timeout=0.5) is None
        assert source.protocol_errors == 1


def test_missing_source_is_device_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailable):
        open_source(tmp_path / "nope")


def test_select_frames_prefers_the_sharp_frame() -> None:
    bgr, _ = render_frame(FrameSpec(char_height_px=40.0), np.random.default_rng(8))
    blurred = cv2.GaussianBlur(bgr, (0, 0), 3.0)
    trigger = 1000.0
    frames = [
        Frame(blurred, trigger - 0.2, "rear", 0),
        Frame(bgr, trigger + 0.1, "rear", 1),
        Frame(blurred, trigger + 0.3, "side", 0),
        Frame(bgr, trigger + 30.0, "side", 1),
    ]
    chosen = select_frames(frames, trigger, window_s=2.0, max_frames=1)
    assert chosen == [frames[1]]
    chosen = select_frames(frames, trigger, window_s=2.0, max_frames=2)
    assert chosen == [frames[1], frames[2]]
    assert select_frames(frames, trigger, window_s=2.0, max_frames=10) == [frames[1], frames[2], frames[0]]
    assert select_frames(frames, trigger, window_s=2.0, max_frames=0) == []


BROKEN_JPEG = b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"
"""Whole to look at (start and end markers) but not an image: found out only when decoded."""


def test_a_stream_frame_is_decoded_when_first_looked_at_and_a_bad_one_fails_then() -> None:
    from gated.errors import ProtocolError

    with MjpegCameraSimulator(fps=20, seed=5) as camera, open_source(camera.url) as source:
        good = source.read(timeout=5.0)
        assert good is not None and not good.decoded  # kept as its JPEG until someone looks
        assert good.image.shape == (720, 1280, 3) and good.decoded
        camera.play_jpegs([BROKEN_JPEG, camera.current_jpeg()])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = source.read(timeout=1.0)
            if frame is None:
                continue
            try:
                frame.image  # noqa: B018
            except ProtocolError as error:
                assert "not a decodable image" in str(error)
                break
        else:
            raise AssertionError("the broken frame never came")
        assert source.protocol_errors == 0  # whole parts: the stream had nothing to count


def test_the_driver_forgets_a_frame_that_does_not_decode_and_counts_it() -> None:
    import threading

    from drivers.base import BoundedQueue
    from drivers.ocr_frames import _View
    from gated.errors import ProtocolError

    errors: BoundedQueue[ProtocolError] = BoundedQueue(10)
    with MjpegCameraSimulator(fps=10, seed=6) as camera:
        view = _View(
            camera.url,
            keep_seconds=30.0,
            sample_period=0.1,
            silence_timeout=5.0,
            errors=errors,
            wake=threading.Event(),
            retry_seconds=1.0,
        )
        view.open()
        try:
            time.sleep(0.5)
            camera.play_jpegs([BROKEN_JPEG, camera.current_jpeg()])
            time.sleep(1.0)
            start = time.time() - 30
            kept = view.frames_between(start, time.time())
            assert kept and all(frame.image.shape == (720, 1280, 3) for frame in kept)
            assert len(errors) == 1 and "not a decodable image" in str(errors.take())
            # Forgotten: asked again, the same window holds no broken frame and counts nothing more.
            again = view.frames_between(start, time.time())
            assert len(again) >= len(kept) and not errors
        finally:
            view.close()

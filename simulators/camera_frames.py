"""``gated-sim camera-frames``: an MJPEG gate camera filming container doors, or a labelled dataset.

The pictures are painted by ``simulators.camera_render`` and served by ``simulators.camera_server``;
this module is the command and keeps the names other modules import from it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gated.cli.argtypes import output_folder, port
from simulators.camera_render import (
    DEFAULT_FONT,
    HEIGHT,
    LAYOUTS,
    OWNER_CODES,
    OWNER_NAMES,
    PAINTS,
    SIZE_TYPES,
    VIEWS,
    WIDTH,
    FrameSpec,
    GroundTruth,
    Layout,
    MarkTruth,
    View,
    container_number,
    encode_jpeg,
    font_names,
    installed_fonts,
    number_is_valid,
    passing_truck,
    random_spec,
    render_empty_lane,
    render_frame,
    write_dataset,
)
from simulators.camera_server import BOUNDARY, HOST, MjpegCameraSimulator

__all__ = [
    "BOUNDARY",
    "DEFAULT_FONT",
    "HEIGHT",
    "HOST",
    "LAYOUTS",
    "OWNER_CODES",
    "OWNER_NAMES",
    "PAINTS",
    "SIZE_TYPES",
    "VIEWS",
    "WIDTH",
    "FrameSpec",
    "GroundTruth",
    "Layout",
    "MarkTruth",
    "MjpegCameraSimulator",
    "View",
    "container_number",
    "encode_jpeg",
    "font_names",
    "installed_fonts",
    "number_is_valid",
    "passing_truck",
    "random_spec",
    "register_cli",
    "render_empty_lane",
    "render_frame",
    "run_cli",
    "write_dataset",
]


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gated-sim camera-frames``."""
    parser = subparsers.add_parser(
        "camera-frames",
        help="an MJPEG gate camera filming container doors (or write a labelled dataset)",
        description="Serve rendered container frames as MJPEG over HTTP, or write a labelled dataset.",
    )
    parser.add_argument("--port", type=port, default=8081, help="HTTP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write-dataset", metavar="DIR", type=output_folder, default=None, help="write frames, then exit"
    )
    parser.add_argument("--count", type=int, default=100, help="frames to write with --write-dataset")
    parser.add_argument("--duration", metavar="SECONDS", type=float, default=None, help="then stop")
    parser.add_argument("--every", metavar="SECONDS", type=float, default=6.0, help="between trucks")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Write a dataset, or serve passing trucks until ``--duration`` has passed or Ctrl-C."""
    if args.write_dataset is not None:
        if args.count < 0:
            print("camera-frames: --count must not be negative")
            return 2
        labels = write_dataset(args.write_dataset, args.count, args.seed)
        print(f"camera-frames: wrote {args.count} frames and {labels}")
        return 0
    if args.fps <= 0 or args.every <= 0:
        print("camera-frames: --fps and --every must be positive")
        return 2
    rng = np.random.default_rng(args.seed)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with MjpegCameraSimulator(port=args.port, fps=args.fps, seed=args.seed) as camera:
        print(f"camera-frames: MJPEG at {camera.url}, snapshots at {camera.snapshot_url}", flush=True)

        def left(seconds: float) -> float:
            """``seconds``, cut short at the deadline: stopping is never late by more than a frame."""
            return seconds if deadline is None else min(seconds, max(0.0, deadline - time.monotonic()))

        while deadline is None or time.monotonic() < deadline:
            spec = random_spec(rng)
            frames = max(2, int(args.fps * 2))
            # Painted one frame at a time (each takes a while on a busy PC), so the deadline holds.
            numbers = None
            for frame in passing_truck(spec, frames=frames):
                if left(1.0) <= 0:
                    break
                truth = camera.play([frame])[0]
                if numbers is None:
                    numbers = " ".join(truth.container_numbers)
                    print(f"camera-frames: truck with {numbers}", flush=True)
            time.sleep(left(frames / args.fps + 0.5))
            camera.show(None)
            time.sleep(left(args.every))
    return 0

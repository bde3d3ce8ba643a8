"""What every benchmark shares: the machine it ran on, progress on stderr, a mosquitto of its own."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gated.errors import GatedError


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mosquitto_binary() -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    found = shutil.which("mosquitto", path=search)
    if found is None:
        raise GatedError(
            "the pipeline benchmark needs mosquitto (Debian package `mosquitto`), "
            "which is not installed or not on PATH, /usr/sbin or /usr/local/sbin"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """A mosquitto broker of the benchmark's own, on a free loopback port, stopped by its PID."""

    def __init__(self, folder: Path) -> None:
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        self.conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            # Nothing may be dropped or throttled by broker defaults: the bench counts arrivals.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_dest stderr",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # no privilege drop: nothing here is owned by `mosquitto`
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise GatedError(f"mosquitto did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def present_truck(pipeline: Any, box: str, epc: str, clock: Callable[[], float]) -> float:
    """One truck at lane-1 of a bench daemon: its container read and the portal's verdict, then its
    tag last (which completes the visit); ``clock()`` just before the tag, where its latency starts."""
    from datetime import UTC, datetime

    from gated.model import Kind, Quality, Reading, ScreeningVerdict, Source

    now = datetime.now(UTC)
    pipeline.reading(
        Reading("lane-1", Kind.OCR, "rfid-1", Source.CONTAINER_NUMBER, box, now, confidence=0.97)
    )
    pipeline.reading(
        Reading("lane-1", Kind.RPM, "rfid-1", Source.SCREENING, ScreeningVerdict.CLEAR, now, Quality.GOOD)
    )
    started = clock()
    pipeline.reading(Reading("lane-1", Kind.RFID, "rfid-1", Source.EPC, epc, now))
    return started

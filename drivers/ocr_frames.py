"""Driver for plain IP cameras whose frames gated reads itself (``driver = "ocr-frames"``).

Where ``drivers.ocr_camera`` listens to a camera that reads numbers on board, this driver watches one
or more ordinary camera views (MJPEG over HTTP, RTSP, a video file or an image folder: see
``ocr.frames``) and runs gated's own OCR on them:

1. A thread per view keeps the last few seconds of frames, at most ``sample_fps`` a second (an
   MJPEG camera's as JPEGs: only the frames round a trigger are ever decoded).
2. When a visit opens on the lane with a tag read or the portal's occupancy, the daemon calls
   ``visit_opened``. The driver hands the sharpest half of ``frames_per_view`` of each view's
   frames from the ``pre_trigger`` seconds before the trigger to the OCR pool (``ocr.pool``) at
   once; once ``post_trigger`` seconds have passed, the sharpest of the rest of the window (from
   ``pre_trigger`` before the trigger to ``post_trigger`` after it) make up ``frames_per_view`` a
   view. The early frames are read while the truck drives on, so the number is ready about one
   frame's read after the window closes. Every frame gets the quick look; the slow full read only
   once all are in (``OcrPool.collecting``), when none settled the number, and only for the
   sharpest frame of each view (the others show the same marks, less sharp). Its own thread never
   waits on OCR.
3. When every frame is read, the candidates are voted per container (``ocr.assemble.vote``: frames
   and views that agree raise the confidence, disagreement lowers it) and decided against
   ``min_confidence``. The crop the number was read from (when nothing was read: the sharpest frame)
   is stored in the evidence store first; then the readings go out:

   - ``container_number``: GOOD with the number when it was read with a fitting check digit and
     enough confidence; UNCERTAIN with the number as read when it has the ISO 6346 shape but the
     check digit does not fit or the confidence is too low (never corrected: the policy sends it to a
     clerk, and still matches holds on it); BAD with value None when nothing shaped like a number
     was read. The crop is its evidence. This is the reading model of the smart camera driver.
   - ``size_type`` when a size/type code was read beside the number;
   - ``passage_end`` with how many containers the frames showed (two 20 ft boxes on one chassis
     give two numbers, voted per number across frames and views, ``ocr.assemble.vote_containers``);
     it completes the visit for OCR.

4. When ``plate_views`` (cameras aimed at the truck's front) are configured, the sharpest
   ``frames_per_view`` frames of each are read for the licence plate in the same pool, after the
   container frames (so the number is not kept waiting), one after another, sharpest first, until
   one gives the plate (a truck has one: the rest are left unread, ``OcrPool.submit_plates``),
   voted (``ocr.plate.vote_plates``) and
   reported, crop stored first, as one ``licence_plate`` reading: GOOD with the plate (upper case,
   no separators) when voted at ``plate_min_confidence`` or more; UNCERTAIN with the plate as read
   when it fits a format but falls short of that, or with the text as read when it is plate-shaped
   but fits no format (a letter the format never issues); BAD with value None when nothing
   plate-shaped was read. The plate is informational: it joins the visit, it never completes or
   decides one.

5. The pool reads the oldest visit's frames first (the trigger's time ranks them; ``ocr.pool``).
   When a visit is decided before its frames are read (``visit_decided``, a decision listener),
   its container frames still waiting are dropped: no reading of theirs would join it.

While this camera's frames fall behind (one waits ``BACKLOG_SECONDS`` for an OCR worker, or frames
of more than ``BACKLOG_VISITS`` visits wait), the device is degraded with a detail starting
``OCR backlog``: the pipeline raises an ``ocr_backlog`` alarm and the lane shows why. It is online
again once the queue has drained (to half that wait).

The device is online while every container view delivers frames. A view that fails, or a live
stream that sends no frame for ``silence_timeout`` seconds, is opened again on its own every
``backoff_max`` seconds; meanwhile the device is degraded (its visits are read from the views that
still deliver, which a lane with views on the doors and both sides can afford) and, when no
container view delivers, offline: the driver then reconnects (``drivers.base``). Triggers and reads
in progress are kept across a reconnect. A plate view that is down never changes the device's state:
a visit read meanwhile gets a BAD plate reading. A part that does not decode is counted as a
protocol error and skipped.

Frame and trigger times are wall-clock seconds (``time.time()``), the clock the frame sources stamp
frames with.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator, model_validator

from drivers.base import BoundedQueue, Driver
from gated.clock import Clock
from gated.errors import (
    ConfigError,
    ContainerNumberError,
    DeviceUnavailable,
    GatedError,
    ProtocolError,
    StorageError,
)
from gated.evidence import EvidenceStore
from gated.iso6346 import ContainerNumber
from gated.model import Evidence, Kind, Quality, Reading, Source, Visit
from gated.redact import error_text, printable, redact, redact_url, shown
from gated.settings import DeviceSettings, DriverContext, Strict, read_password_file
from ocr.assemble import NOTHING, Candidate, ContainerRead, decide, vote_containers
from ocr.plate import DEFAULT_FORMATS, DEFAULT_MIN_CONFIDENCE, NO_PLATE, PlateFormat, PlateRead, vote_plates
from ocr.textbox import TextBox

if TYPE_CHECKING:
    from gated.metrics import Metrics
    from ocr.engine import Image
    from ocr.frames import Frame, FrameSource
    from ocr.pool import OcrPool

# OpenCV and NumPy (ocr.frames, ocr.pool) load inside the functions that use them: the config, and
# so every light command (holds, query, check-config), imports this module for its settings.

log = logging.getLogger(__name__)

VISIT_TRIGGERS: Final = frozenset({"rfid:epc", "rpm:occupancy"})
"""How a visit must have opened (``Visit.trigger``) for the cameras to read it."""
SIZE_TYPE_SOURCE: Final = Source.SIZE_TYPE
MEDIA_TYPE: Final = "image/jpeg"
CROP_QUALITY: Final = 90
FRAME_QUALITY: Final = 80
CROP_PAD: Final = 0.3
"""Margin around the number's boxes, as a share of the shorter side of their union."""
MIN_CROP_PAD_PX: Final = 12
KEEP_SLACK_SECONDS: Final = 2.0
"""Frames are kept this much longer than the trigger window needs (the read starts a step late)."""
MAX_QUEUED_ERRORS: Final = 1000
"""Most bad frames from the views held between steps; more are refused and counted."""
MAX_PENDING_READS: Final = 16
"""Most visits read at once (waiting for frames or in the OCR pool); a trigger beyond them is
refused and counted in ``triggers_refused``: that visit gets no number from this camera."""
BACKLOG_SECONDS: Final = 8.0
"""A frame of a visit waiting this long for an OCR worker (not being read) is a backlog."""
BACKLOG_VISITS: Final = 3
"""More visits than this with frames waiting for an OCR worker at once is a backlog too."""
BACKLOG: Final = "OCR backlog"
"""How the device's degraded detail starts while OCR lags (the pipeline raises ``ocr_backlog``)."""
DECIDED_KEPT: Final = 64
"""Decided visits remembered, so a trigger still queued for one of them is not read."""
DEFAULT_PRE_TRIGGER: Final = 1.0
DEFAULT_POST_TRIGGER: Final = 1.5
DEFAULT_FRAMES_PER_VIEW: Final = 2
_READ_TIMEOUT = 0.5
_LIVE_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps"})

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Trigger:
    """A visit opened on the lane at ``ts`` (epoch seconds)."""

    visit: str
    ts: float


@dataclass
class _Read(Generic[R]):
    """One visit's frames of one kind (container or plate views) on their way through the OCR pool."""

    trigger: Trigger
    frames: list[Frame]
    futures: list[Future[R]]
    resubmitted: set[int] = field(default_factory=set)
    complete: bool = True
    """False while the frames after the trigger are still to come (only the early ones are in)."""

    def done(self) -> bool:
        return self.complete and all(future.done() for future in self.futures)


class _View:
    """One camera view: its frame source, read by a thread that keeps the recent frames.

    Its thread opens the source again ``retry_seconds`` after it was lost or could not be opened;
    ``failure`` says why it is down meanwhile (the driver decides what that means for the device)."""

    def __init__(
        self,
        url: str,
        *,
        keep_seconds: float,
        sample_period: float,
        silence_timeout: float,
        errors: BoundedQueue[ProtocolError],
        wake: threading.Event,
        retry_seconds: float,
    ) -> None:
        self.url = url
        self._retry_seconds = retry_seconds
        self.shown = _without_credentials(url)
        self.failure: DeviceUnavailable | None = None
        self._keep_seconds = keep_seconds
        self._sample_period = sample_period
        # Only a live stream must keep sending; a folder waits for drops, a recording ends.
        self._live = "://" in url and urlsplit(url).scheme.lower() in _LIVE_SCHEMES
        self._silence_timeout = silence_timeout
        self._errors = errors
        self._wake = wake
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._source: FrameSource | None = None
        self._thread: threading.Thread | None = None

    def open(self, *, source: FrameSource | None = None, failure: DeviceUnavailable | None = None) -> None:
        """Start reading.

        Never raises: the view reads in its own thread and opens its source again whenever it is
        lost, starting with ``source`` when the caller has just opened it, or waiting first when
        ``failure`` says the caller's attempt just failed."""
        self.failure = failure
        self._thread = threading.Thread(target=self._keep_open, args=(source,), name=f"view {self.shown}")
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)

    def frames_between(self, start: float, end: float) -> list[Frame]:
        """The frames kept from ``start`` to ``end``, decoded; one that does not decode is counted
        as a protocol error and forgotten."""
        with self._lock:
            frames = [frame for frame in self._frames if start <= frame.ts <= end]
        good = []
        for frame in frames:
            try:
                frame.image  # noqa: B018 - decoded here, once, off the view's lock
            except ProtocolError as error:
                self._errors.put(ProtocolError(printable(redact(f"view {self.shown}: {error}"))))
                self._wake.set()
                with self._lock, contextlib.suppress(ValueError):
                    self._frames.remove(frame)
                continue
            good.append(frame)
        return good

    def _run(self, source: FrameSource) -> None:
        counted = 0
        last_frame = time.monotonic()
        try:
            while not self._stop.is_set():
                frame = source.read(timeout=_READ_TIMEOUT)
                if source.protocol_errors > counted:
                    for _ in range(source.protocol_errors - counted):
                        problem = printable(redact(f"view {source.source}: {source.last_error}"))
                        self._errors.put(ProtocolError(problem))
                    counted = source.protocol_errors
                    self._wake.set()
                if frame is not None:
                    last_frame = time.monotonic()
                    self._keep(frame)
                elif self._live and time.monotonic() - last_frame > self._silence_timeout:
                    raise DeviceUnavailable(f"view {self.shown}: no frame for {self._silence_timeout:g} s")
                elif not self._live:
                    self._stop.wait(0.05)  # a recording at its end answers at once
        except DeviceUnavailable as error:
            self._fail(error)
        except Exception as error:  # a bug here must show as an offline camera, not a silent one
            log.exception("view %s: reader failed", self.shown)
            self._fail(DeviceUnavailable(f"view {self.shown}: reader failed: {error_text(error)}"))

    def _keep_open(self, source: FrameSource | None) -> None:
        """A retrying view's thread: read, and open the source again whenever it is lost. Logs the
        first failure and the recovery, not every retry. ``failure`` stays set from the moment the
        view is lost until it delivers again (not cleared for each attempt, so the device's state
        does not flicker with every retry)."""
        failing = False
        while not self._stop.is_set():
            if self.failure is not None and not failing:
                log.warning(
                    "view %s: %s (retrying every %g s)", self.shown, self.failure, self._retry_seconds
                )
                failing = True
            if failing:
                self._stop.wait(self._retry_seconds)
                if self._stop.is_set():
                    return
            if source is None:
                try:
                    source = self.open_source()
                except DeviceUnavailable as error:
                    self.failure = error
                    continue
            self._source = source
            self.failure = None
            if failing:
                log.info("view %s: delivering frames again", self.shown)
                failing = False
            self._run(source)  # until the view fails or is closed
            source.close()
            source = None

    def open_source(self) -> FrameSource:
        """The view's source, opened; ``DeviceUnavailable`` when it cannot be."""
        # Not chained, and the text redacted: the frame source's errors may show the URL as written.
        from ocr.frames import open_source

        try:
            return open_source(self.url)
        except DeviceUnavailable as error:
            raise DeviceUnavailable(error_text(error)) from None
        except GatedError as error:  # a ConfigError too: a view that cannot be opened is unavailable
            raise DeviceUnavailable(f"view {self.shown}: {error_text(error)}") from None

    def _keep(self, frame: Frame) -> None:
        with self._lock:
            # Tolerate jitter: a 5 fps camera sampled at 5 fps must not lose every other frame.
            if self._frames and frame.ts - self._frames[-1].ts < 0.8 * self._sample_period:
                return
            self._frames.append(frame)
            while self._frames and self._frames[0].ts < frame.ts - self._keep_seconds:
                self._frames.popleft()

    def _fail(self, error: DeviceUnavailable) -> None:
        if not self._stop.is_set():
            # It becomes the device's status detail and a log line: no password, one line.
            self.failure = DeviceUnavailable(error_text(error))
            self._wake.set()


def _all_down(failures: Sequence[DeviceUnavailable]) -> DeviceUnavailable:
    """The device is offline: every container view is down, for these reasons."""
    return DeviceUnavailable("; ".join(map(str, failures)))


def _without_credentials(url: str) -> str:
    """``url`` fit for a log line: a camera password in it (or a token in its query) stays out of
    the logs, and a control character in a folder's name cannot start a fake line."""
    return printable(redact_url(url), None)


FRAME_SOURCE_SCHEMES = frozenset({"", "http", "https", "rtsp", "rtsps", "file"})
_SCHEME_WITHOUT_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/")
PLATE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PlateFormatConfig(Strict):
    """One licence plate layout a plate view may see (``ocr.plate.PlateFormat``)."""

    name: str = Field(min_length=1, max_length=64)
    pattern: str = Field(
        description='L a letter, D a digit, a space or a dash between groups, e.g. "LL-DDD-LL"; 4 to 10 '
        "characters."
    )
    letters: str = Field(
        PLATE_LETTERS, description="The letters the format issues (capitals); others are never read into it."
    )

    @model_validator(mode="after")
    def _valid_format(self) -> PlateFormatConfig:
        self.to_format()
        return self

    def to_format(self) -> PlateFormat:
        try:
            return PlateFormat(self.name, self.pattern, self.letters)
        except ConfigError as error:
            # pydantic reports a ValueError with the key path in front of it.
            raise ValueError("; ".join(error.problems)) from None


class OcrFramesDevice(DeviceSettings):
    """A plain IP camera (or several, one per view) whose frames gated reads itself."""

    driver: Literal["ocr-frames"]
    views: list[str] = Field(
        min_length=1,
        max_length=4,
        description="One frame source per camera view: http(s):// MJPEG, rtsp(s)://, a video file or "
        "a folder of images (relative to the config file). A camera's user goes in the URL "
        "(rtsp://gated@cam-1/stream), its password in view_password_file.",
    )
    view_password_file: str | None = Field(
        None,
        description="File holding the password of the views and plate_views that name a user without a "
        "password (rtsp://gated@cam-1/stream); relative to the config file, read at start, one trailing "
        "newline stripped. A view with user:password@ keeps its own. Keeps the password out of the "
        "config and out of every message.",
    )
    engine: Literal["rapidocr", "easyocr"] = Field("rapidocr", description="The OCR engine.")
    min_confidence: float = Field(
        0.8, ge=0, le=1, description="Below this the number is reported as uncertain (goes to a clerk)."
    )
    pre_trigger_seconds: float = Field(
        DEFAULT_PRE_TRIGGER,
        ge=0,
        le=10,
        description="Frames this long before the visit's trigger are considered (never as far back as "
        "the previous truck).",
    )
    post_trigger_seconds: float = Field(
        DEFAULT_POST_TRIGGER,
        ge=0,
        le=10,
        description="Frames up to this long after the trigger are considered; the read starts then.",
    )
    frames_per_view: int = Field(
        DEFAULT_FRAMES_PER_VIEW,
        ge=1,
        le=10,
        description="The sharpest frames of each view that are read (each costs OCR time).",
    )
    sample_fps: float = Field(
        5.0, gt=0, le=30, description="Frames per second kept from each view (the rest are dropped)."
    )
    silence_timeout_seconds: float = Field(
        5.0, gt=0, description="A live view without a frame for this long is offline."
    )
    plate_views: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Frame sources aimed at the truck's front (same kinds as views): their sharpest "
        "frames_per_view frames are read for the licence plate, reported as a licence_plate reading "
        "that never decides anything.",
    )
    plate_formats: list[PlateFormatConfig] | None = Field(
        None,
        min_length=1,
        description="The plate layouts the lane sees; default: generic shapes (ABC 1234, 7ABC123, "
        "AB-123-CD, AB 123CD, AB12 CDE, 1234 BCD).",
    )
    plate_min_confidence: float = Field(
        DEFAULT_MIN_CONFIDENCE,
        ge=0,
        le=1,
        description="Below this the plate is reported as uncertain (a plate has no check digit: keep it "
        "high).",
    )

    @field_validator("views", "plate_views")
    @classmethod
    def _known_sources(cls, views: list[str]) -> list[str]:
        for view in views:
            problem = _view_problem(view)
            if problem:
                # The view as written may hold a password: the message shows it without.
                raise ValueError(f"view {redact_url(view)!r}: {problem}")
        return views

    @model_validator(mode="after")
    def _password_file_used(self) -> OcrFramesDevice:
        # A password file no view can use would be ignored: refuse it rather than drop it.
        if self.view_password_file is not None and not any(
            _names_user_only(view) for view in (*self.views, *self.plate_views)
        ):
            raise ValueError(
                "view_password_file needs a view that names a user without a password (rtsp://USER@host/path)"
            )
        return self

    @field_validator("plate_formats")
    @classmethod
    def _unique_format_names(cls, formats: list[PlateFormatConfig] | None) -> list[PlateFormatConfig] | None:
        names = [plate_format.name for plate_format in formats or []]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"plate format names must be unique: {', '.join(duplicates)}")
        return formats

    @model_validator(mode="after")
    def _plate_settings_need_plate_views(self) -> OcrFramesDevice:
        # Plate settings without a plate view would be ignored: refuse them rather than drop them.
        unused = sorted({"plate_formats", "plate_min_confidence"} & self.model_fields_set)
        if unused and not self.plate_views:
            raise ValueError(f"{' and '.join(unused)} need plate_views")
        return self

    def with_paths(self, resolve: Callable[[str], str]) -> Self:
        return self.model_copy(
            update={
                "views": [resolve(view) for view in self.views],
                "plate_views": [resolve(view) for view in self.plate_views],
                "view_password_file": None
                if self.view_password_file is None
                else resolve(self.view_password_file),
            }
        )

    def with_passwords(self, key: str) -> Self:
        if self.view_password_file is None:
            return self
        password = read_password_file(self.view_password_file, f"{key}.view_password_file")
        return self.model_copy(
            update={
                "views": [_with_password(view, password) for view in self.views],
                "plate_views": [_with_password(view, password) for view in self.plate_views],
            }
        )

    def plate_format_list(self) -> tuple[PlateFormat, ...]:
        """The configured plate formats, or the defaults."""
        if self.plate_formats is None:
            return DEFAULT_FORMATS
        return tuple(plate_format.to_format() for plate_format in self.plate_formats)


def _view_problem(view: str) -> str | None:
    """What is wrong with a frame source as written, or None."""
    scheme = view.partition("://")[0].lower() if "://" in view else ""
    if scheme not in FRAME_SOURCE_SCHEMES or not view.strip():
        return "use http(s)://, rtsp(s)://, file://, or a path to a video file or an image folder"
    if not scheme and _SCHEME_WITHOUT_SLASHES.match(view):
        return "a URL needs '://' after its scheme"
    if scheme in _LIVE_SCHEMES:
        if not view.isprintable() or " " in view:
            return "a URL has no spaces or control characters (percent-encode them)"
        parts = urlsplit(view)
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            return "the port is not a number from 1 to 65535"
        if not parts.hostname:
            return "the URL names no host"
    return None


def _names_user_only(view: str) -> bool:
    """A live view with a user and no password: the one view_password_file completes."""
    if "://" not in view or view.partition("://")[0].lower() not in _LIVE_SCHEMES:
        return False
    parts = urlsplit(view)
    return parts.username is not None and parts.password is None


def _with_password(view: str, password: str) -> str:
    """``view`` with ``password`` for its user, when it names a user without one."""
    if not _names_user_only(view):
        return view
    parts = urlsplit(view)
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


class _DriverOptions(TypedDict, total=False):
    backoff_initial: float
    backoff_max: float
    offline_after: float


class FramesCameraDriver(Driver):
    """Reads container numbers from camera frames around each visit's trigger (module docstring)."""

    kind = Kind.OCR

    @classmethod
    def from_settings(cls, lane: str, settings: OcrFramesDevice, context: DriverContext) -> Self:
        return cls(
            lane,
            settings,
            pool=context.ocr_pools(settings.engine),
            evidence=context.evidence,
            clock=context.clock,
        )

    def __init__(
        self,
        lane: str,
        settings: OcrFramesDevice,
        *,
        pool: OcrPool,
        evidence: EvidenceStore,
        clock: Clock | None = None,
        **kwargs: Unpack[_DriverOptions],
    ) -> None:
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        self.views = list(settings.views)
        self.plate_views = list(settings.plate_views)
        self.plate_formats = settings.plate_format_list()
        self.plate_min_confidence = settings.plate_min_confidence
        self.pool = pool
        self.evidence = evidence
        self.min_confidence = settings.min_confidence
        self.pre_trigger = settings.pre_trigger_seconds
        self.post_trigger = settings.post_trigger_seconds
        self.frames_per_view = settings.frames_per_view
        self.sample_fps = settings.sample_fps
        self.silence_timeout = settings.silence_timeout_seconds
        self.poll_interval = 0.1
        # Figures for logs, tests and benchmarks.
        self.reads = 0
        self.frames_read = 0
        self.frames_read_early = 0
        """Frames handed to the pool at the trigger, before the window closed."""
        self.ocr_failures = 0
        self.plate_reads = 0
        self.plate_frames_read = 0
        self.last_read_seconds: float | None = None
        """Seconds from the last read's trigger to its readings."""
        self._triggers: BoundedQueue[Trigger] = BoundedQueue(MAX_PENDING_READS)
        self.triggers_refused = 0
        self._refusing = 0  # visits refused since the last one read; the first is logged
        self._waiting: list[_Read[list[Candidate]]] = []
        self._reads: list[_Read[list[Candidate]]] = []
        self._plate_reads: list[_Read[PlateRead]] = []
        self._errors: BoundedQueue[ProtocolError] = BoundedQueue(MAX_QUEUED_ERRORS)
        self._wake = threading.Event()
        self._open_views: list[_View] = []
        self._open_plate_views: list[_View] = []
        self._decided: BoundedQueue[str] = BoundedQueue(MAX_QUEUED_ERRORS)
        self._decided_recent: deque[str] = deque(maxlen=DECIDED_KEPT)
        self.visits_dropped = 0
        """Visits decided before their read was done: the rest of their frames were not read."""
        self.backlog: str | None = None
        """Why OCR lags on this camera (module docstring), or None."""
        self.metrics: Metrics | None = None
        """Where the OCR queue depth and seconds per frame are recorded (set by the daemon)."""

    # -- from the pipeline thread ---------------------------------------------------------------
    def visit_opened(self, visit: Visit) -> None:
        """A visit listener: read the visit when it opened on this lane with a tag or occupancy."""
        if visit.lane == self.lane and visit.trigger in VISIT_TRIGGERS:
            self.trigger(Trigger(visit.id, visit.opened_at.timestamp()))

    def visit_decided(self, visit: Visit, _decisions: object = None) -> None:
        """A decision listener: a visit of this lane was decided, so a read of its container frames
        now would be thrown away (the correlator lets no reading join a closed visit). Those still
        waiting for OCR are dropped before a worker takes them (its plate is still read: it is
        published for the record, and never decides anything)."""
        if visit.lane != self.lane:
            return
        self.pool.drop(visit.id, plates=False)
        if self._decided.put(visit.id):
            self._wake.set()

    def trigger(self, trigger: Trigger) -> None:
        """Read the frames around ``trigger`` (thread-safe, never blocks)."""
        if self._triggers.put(trigger):
            self._wake.set()
        else:
            self._refuse(trigger)

    def _refuse(self, trigger: Trigger) -> None:
        self.triggers_refused += 1
        self._refusing += 1
        if self._refusing == 1:
            log.warning(
                "%s/%s: %d visits are being read already: visit %s is not read (repeats are counted)",
                self.lane,
                self.device,
                MAX_PENDING_READS,
                trigger.visit,
            )

    # -- the driver's thread --------------------------------------------------------------------
    def connect(self) -> None:
        self.close()
        # Every container view is opened now; the device connects when at least one delivers, and
        # a view that is down is opened again on its own meanwhile (the device is degraded).
        views = [self._view(url) for url in self.views]
        failures: list[DeviceUnavailable] = []
        for view in views:
            try:
                source = view.open_source()
            except DeviceUnavailable as error:
                failures.append(error)
                view.open(failure=error)
            else:
                view.open(source=source)
        if len(failures) == len(views):
            for view in views:
                view.close()
            raise _all_down(failures)
        # The plate is informational: a plate camera that is down must not take the container
        # views (and with them the lane's releases) offline; plate views connect on their own.
        plate_views = [self._view(url) for url in self.plate_views]
        for view in plate_views:
            view.open()
        self._open_views, self._open_plate_views = views, plate_views

    def degraded(self) -> str | None:
        down = self._down()
        views = None
        if down and len(down) < len(self._open_views):
            views = f"{len(down)} of {len(self._open_views)} views down: {'; '.join(map(str, down))}"
        self.backlog = self._backlog()
        return "; ".join(part for part in (self.backlog, views) if part) or None

    def _backlog(self) -> str | None:
        """Why OCR lags, or None: a frame of this camera's visits has waited ``BACKLOG_SECONDS``
        for a worker, or more than ``BACKLOG_VISITS`` visits have frames waiting (being read is not
        waiting: a hard frame takes seconds). Once lagging, it is over only when no frame has waited
        half that long and no more than that many visits wait, so it does not flap."""
        visits = {read.trigger.visit for read in self._reads}
        waits = [seconds for visit, seconds in self.pool.waiting().items() if visit in visits]
        oldest = max(waits, default=0.0)
        limit = BACKLOG_SECONDS / 2 if self.backlog else BACKLOG_SECONDS
        if oldest <= limit and len(waits) <= BACKLOG_VISITS:
            return None
        return (
            f"{BACKLOG}: frames of {len(waits)} visit(s) waiting for OCR, the oldest for {oldest:.0f} s "
            f"(more than {BACKLOG_SECONDS:g} s or {BACKLOG_VISITS} visits)"
        )

    def _down(self) -> list[DeviceUnavailable]:
        """Why each container view that is down is down."""
        return [view.failure for view in self._open_views if view.failure is not None]

    def _view(self, url: str) -> _View:
        return _View(
            url,
            keep_seconds=self.pre_trigger + self.post_trigger + KEEP_SLACK_SECONDS,
            sample_period=1.0 / self.sample_fps,
            silence_timeout=self.silence_timeout,
            errors=self._errors,
            wake=self._wake,
            retry_seconds=self.backoff_max,
        )

    def step(self) -> Sequence[Reading]:
        self._wait()
        self._forget_decided()
        self._start_due()
        if self.metrics is not None:
            visits = {read.trigger.visit for read in self._reads}
            visits.update(read.trigger.visit for read in self._plate_reads)
            self.metrics.ocr_queue_depth(self.lane, self.device, self.pool.queue_depth(visits))
        readings: list[Reading] = []
        for read in [read for read in self._reads if read.done()]:
            readings.extend(self._finish(read))
        for plate_read in [read for read in self._plate_reads if read.done()]:
            readings.extend(self._finish_plate(plate_read))
        if readings:
            return readings
        down = self._down()
        if down and len(down) == len(self._open_views):
            raise _all_down(down)
        if self._errors:
            raise self._errors.take()
        return []

    def close(self) -> None:
        views = [*self._open_views, *self._open_plate_views]
        self._open_views, self._open_plate_views = [], []
        for view in views:
            view.close()

    def _wait(self) -> None:
        """Sleep until something happens, the next read is due, or one poll interval passed."""
        timeout = 0.0 if self._errors else self.poll_interval
        if self._waiting:
            due = min(read.trigger.ts for read in self._waiting) + self.post_trigger
            timeout = min(timeout, max(0.0, due - time.time()))
        self._wake.wait(timeout)
        self._wake.clear()

    def _forget_decided(self) -> None:
        """Drop the reads of visits decided meanwhile: no reading of theirs would be used."""
        while self._decided:
            self._decided_recent.append(self._decided.take())
        if not self._decided_recent:
            return
        decided = set(self._decided_recent)
        self._waiting = [read for read in self._waiting if read.trigger.visit not in decided]
        # A plate read still goes out: a reading of the truck's plate, published, not joined.
        for read in [read for read in self._reads if read.trigger.visit in decided]:
            self._reads.remove(read)
            self.visits_dropped += 1
            log.info(
                "%s/%s: visit %s was decided before its frames were read: %d frames dropped",
                self.lane,
                self.device,
                read.trigger.visit,
                _cancel(read.futures),
            )

    def _start_due(self) -> None:
        while self._triggers:
            trigger = self._triggers.take()
            if trigger.visit in self._decided_recent:
                continue  # decided before its read began
            if len(self._reads) >= MAX_PENDING_READS:
                self._refuse(trigger)
                continue
            if self._refusing:
                log.info("%s/%s: reading visits again, %d not read", self.lane, self.device, self._refusing)
                self._refusing = 0
            # The frames from before the trigger are here already: the sharpest of them are read
            # while the truck drives on, so once the window has passed only the frames taken after
            # the trigger are left to read, and the number is ready that much sooner.
            early = self._choose(
                self._open_views, trigger, trigger.ts, self.frames_per_view // 2 * len(self._open_views)
            )
            self.pool.collecting(trigger.visit)  # its full reads wait for the frames still to come
            futures = [self._submit(frame.image, trigger) for frame in early]
            read = _Read(trigger, early, futures, complete=False)
            self._waiting.append(read)
            self._reads.append(read)
            self.frames_read_early += len(early)
        now = time.time()
        for read in [read for read in self._waiting if now >= read.trigger.ts + self.post_trigger]:
            self._waiting.remove(read)
            trigger = read.trigger
            wanted = self.frames_per_view * len(self._open_views) - len(read.frames)
            rest = self._choose(
                self._open_views, trigger, trigger.ts + self.post_trigger, wanted, besides=read.frames
            )
            # When an early frame has already settled the number, the rest only confirm or
            # contradict it: the quick look does that, and the number is out a full look sooner.
            from ocr.pool import settled_by

            quick_only = any(settled_by(future) for future in read.futures)
            # A view's frames show the same marks: if none settles them, the sharpest frame of
            # each view gets the full read (seconds each), the others their quick look alone.
            best = _sharpest_of_each_view([*read.frames, *rest])
            early_not_best = [
                future for frame, future in zip(read.frames, read.futures, strict=True) if frame not in best
            ]
            read.futures.extend(
                self._submit(frame.image, trigger, quick_only=quick_only or frame not in best)
                for frame in rest
            )
            read.frames.extend(rest)
            read.complete = True
            self.pool.collected(trigger.visit, quick_only=early_not_best)
            if self._open_plate_views:
                # Submitted after the container frames: the pool reads in order, the number first.
                plates = self._choose(
                    self._open_plate_views,
                    trigger,
                    trigger.ts + self.post_trigger,
                    self.frames_per_view * len(self._open_plate_views),
                )
                # In the order chosen (each view's sharpest first): the pool reads them in turn and
                # stops at the first plate read.
                plate_futures = self._submit_plates([frame.image for frame in plates], trigger)
                self._plate_reads.append(_Read(trigger, plates, plate_futures))

    def _choose(
        self,
        views: Sequence[_View],
        trigger: Trigger,
        until: float,
        count: int,
        besides: Sequence[Frame] = (),
    ) -> list[Frame]:
        """The sharpest ``count`` frames, shared fairly between ``views``, taken from ``pre_trigger``
        seconds before ``trigger`` until ``until``, other than the frames ``besides``."""
        from ocr.frames import select_frames

        if count <= 0:
            return []
        start = trigger.ts - self.pre_trigger
        taken = {id(frame) for frame in besides}
        frames = [
            frame for view in views for frame in view.frames_between(start, until) if id(frame) not in taken
        ]
        return select_frames(frames, trigger.ts, max(self.pre_trigger, self.post_trigger), count)

    def _submit(self, image: Image, trigger: Trigger, *, quick_only: bool = False) -> Future[list[Candidate]]:
        # The pool reads the oldest visit's frames first: the trigger's time ranks them.
        return self._guarded(
            lambda: self.pool.submit(
                image,
                quick_only=quick_only,
                visit=trigger.visit,
                order=trigger.ts,
                on_seconds=None if self.metrics is None else self._frame_seconds,
            )
        )

    def _frame_seconds(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.ocr_frame(self.lane, self.device, seconds)

    def _submit_plate(self, image: Image, trigger: Trigger) -> Future[PlateRead]:
        return self._guarded(
            lambda: self.pool.submit_plate(
                image,
                formats=self.plate_formats,
                min_confidence=self.plate_min_confidence,
                visit=trigger.visit,
                order=trigger.ts,
            )
        )

    def _submit_plates(self, images: list[Image], trigger: Trigger) -> list[Future[PlateRead]]:
        # Never raises: a pool that refuses fails the futures with why.
        futures = self.pool.submit_plates(
            images,
            formats=self.plate_formats,
            min_confidence=self.plate_min_confidence,
            visit=trigger.visit,
            order=trigger.ts,
        )
        for future in futures:
            future.add_done_callback(lambda _: self._wake.set())
        return futures

    def _guarded(self, submit: Callable[[], Future[R]]) -> Future[R]:
        """``submit()``'s future, or one failed with why the pool refused it; it wakes the thread."""
        try:
            future = submit()
        except (GatedError, BrokenProcessPool) as error:
            future = Future()
            future.set_exception(error)
        future.add_done_callback(lambda _: self._wake.set())
        return future

    def _results(
        self, read: _Read[R], resubmit: Callable[[Image, Trigger], Future[R]], nothing: R
    ) -> list[R] | None:
        """Each frame's result, ``nothing`` where its OCR failed; None while a frame is read again."""
        retried = False
        for index, future in enumerate(read.futures):
            if _worker_died(future) and index not in read.resubmitted:
                # The worker died under this frame and the pool starts a new one: read it once more.
                read.resubmitted.add(index)
                read.futures[index] = resubmit(read.frames[index].image, read.trigger)
                retried = True
        if retried:
            return None
        results: list[R] = []
        for future in read.futures:
            error = CancelledError() if future.cancelled() else future.exception()
            if error is not None:
                self.ocr_failures += 1
                log.warning("%s/%s: OCR of a frame failed: %r", self.lane, self.device, error)
                results.append(nothing)
            else:
                results.append(future.result())
        return results

    def _finish(self, read: _Read[list[Candidate]]) -> list[Reading]:
        """The readings of a read whose frames are all done (none while a frame is read again)."""
        per_frame = self._results(read, self._submit, [])
        if per_frame is None:
            return []
        self._reads.remove(read)
        self.reads += 1
        self.frames_read += len(read.frames)
        containers = vote_containers(per_frame) or [NOTHING]
        reads: list[tuple[ContainerRead, tuple[Evidence, ...]]] = []
        latest = read.trigger.ts
        for voted in containers:
            result = decide(voted, min_confidence=self.min_confidence)
            frame, boxes = _evidence_frame(read.frames, per_frame, voted)
            reads.append((result, self._store(frame, boxes)))
            latest = max(latest, frame.ts) if frame is not None else latest
        readings = readings_for_containers(
            reads,
            lane=self.lane,
            device=self.device,
            visit=read.trigger.visit,
            ts=datetime.fromtimestamp(latest, UTC),
        )
        self.last_read_seconds = time.time() - read.trigger.ts
        for (result, _), reading in zip(reads, readings, strict=False):
            log.info(
                "%s/%s: visit %s read %s (%s, confidence %.2f) from %d frames, %.2f s after the trigger",
                self.lane,
                self.device,
                read.trigger.visit,
                shown(result.raw) if result.raw else "nothing",
                reading.quality,
                result.confidence,
                len(read.frames),
                self.last_read_seconds,
            )
        return readings

    def _finish_plate(self, read: _Read[PlateRead]) -> list[Reading]:
        """The licence plate reading of a plate read whose frames are all done."""
        reads = self._results(read, self._submit_plate, NO_PLATE)
        if reads is None:
            return []
        self._plate_reads.remove(read)
        self.plate_reads += 1
        self.plate_frames_read += len(read.frames)
        reported = _reported_plate(reads, vote_plates(reads, min_confidence=self.plate_min_confidence))
        frame, boxes = _plate_evidence_frame(read.frames, reads, reported)
        evidence = self._store(frame, boxes)
        ts = frame.ts if frame is not None else read.trigger.ts
        reading = plate_reading_for(
            reported,
            lane=self.lane,
            device=self.device,
            visit=read.trigger.visit,
            ts=datetime.fromtimestamp(ts, UTC),
            evidence=evidence,
        )
        log.info(
            "%s/%s: visit %s plate %s (%s, confidence %.2f) from %d frames, %.2f s after the trigger",
            self.lane,
            self.device,
            read.trigger.visit,
            shown(reported.raw) if reported.raw else "nothing",
            reading.quality,
            reported.confidence,
            len(read.frames),
            time.time() - read.trigger.ts,
        )
        return [reading]

    def _store(self, frame: Frame | None, boxes: Sequence[TextBox]) -> tuple[Evidence, ...]:
        """The crop (or the whole frame) in the evidence store, before any reading refers to it."""
        if frame is None:
            return ()
        try:
            if boxes:
                x0, y0, x1, y1 = crop_bounds(frame.image.shape[1], frame.image.shape[0], boxes)
                data = encode_jpeg(frame.image[y0:y1, x0:x1], CROP_QUALITY)
            else:
                data = encode_jpeg(frame.image, FRAME_QUALITY)
            return (self.evidence.put_bytes(data, MEDIA_TYPE),)
        except StorageError as error:
            log.error("%s/%s: cannot store the OCR crop: %s", self.lane, self.device, error_text(error))
            return ()


def _sharpest_of_each_view(frames: Sequence[Frame]) -> list[Frame]:
    from ocr.frames import sharpness

    best: dict[str, tuple[float, Frame]] = {}
    for frame in frames:
        score = sharpness(frame.image)
        if frame.source not in best or score > best[frame.source][0]:
            best[frame.source] = (score, frame)
    return [frame for _, frame in best.values()]


def _cancel(futures: Sequence[Future[Any]]) -> int:
    """Cancel what is not read yet; returns how many were cancelled (also by the pool before)."""
    for future in futures:
        future.cancel()
    return sum(1 for future in futures if future.cancelled())


def _worker_died(future: Future[Any]) -> bool:
    return not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)


def _evidence_frame(
    frames: Sequence[Frame], per_frame: Sequence[Sequence[Candidate]], voted: Candidate
) -> tuple[Frame | None, tuple[TextBox, ...]]:
    """The frame that read the voted number most confidently, with the boxes it read it from; when
    nothing was read, the sharpest frame and no boxes."""
    best: tuple[float, Frame, tuple[TextBox, ...]] | None = None
    for frame, found in zip(frames, per_frame, strict=True):
        for candidate in found:
            same = voted.number is not None and candidate.number == voted.number and bool(candidate.boxes)
            if same and (best is None or candidate.confidence > best[0]):
                best = (candidate.confidence, frame, candidate.boxes)
    if best is not None:
        return best[1], best[2]
    from ocr.frames import sharpness

    return (max(frames, key=lambda frame: sharpness(frame.image)) if frames else None), ()


def _reported_plate(reads: Sequence[PlateRead], voted: PlateRead) -> PlateRead:
    """What to report of one visit's plate: the vote when a frame read a plate of some format;
    otherwise the sharpest frame's plate-shaped text that fits no format (a near miss), if any."""
    if voted.candidate is not None:
        return voted
    return next((read for read in reads if read.raw is not None), NO_PLATE)


def _plate_key(read: PlateRead) -> str | None:
    return read.candidate if read.candidate is not None else read.raw


def _plate_evidence_frame(
    frames: Sequence[Frame], reads: Sequence[PlateRead], reported: PlateRead
) -> tuple[Frame | None, tuple[TextBox, ...]]:
    """The frame that read the reported plate most confidently, with its boxes; when nothing was
    read, the sharpest frame and no boxes (as ``_evidence_frame`` for numbers)."""
    best: tuple[float, Frame, tuple[TextBox, ...]] | None = None
    key = _plate_key(reported)
    for frame, read in zip(frames, reads, strict=True):
        same = key is not None and _plate_key(read) == key and bool(read.boxes)
        if same and (best is None or read.confidence > best[0]):
            best = (read.confidence, frame, read.boxes)
    if best is not None:
        return best[1], best[2]
    return (frames[0] if frames else None), ()


def crop_bounds(width: int, height: int, boxes: Sequence[TextBox]) -> tuple[int, int, int, int]:
    """The union of ``boxes``, with a margin, within a ``width`` x ``height`` frame."""
    x0 = min(box.bbox[0] for box in boxes)
    y0 = min(box.bbox[1] for box in boxes)
    x1 = max(box.bbox[2] for box in boxes)
    y1 = max(box.bbox[3] for box in boxes)
    pad = max(MIN_CROP_PAD_PX, CROP_PAD * min(x1 - x0, y1 - y0))
    left, top = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    right, bottom = min(width, int(x1 + pad + 1)), min(height, int(y1 + pad + 1))
    if right <= left or bottom <= top:  # boxes outside the frame: keep the whole frame
        return 0, 0, width, height
    return left, top, right, bottom


def encode_jpeg(image: Image, quality: int) -> bytes:
    import cv2
    import numpy as np

    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StorageError(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as JPEG")
    return np.asarray(buffer, dtype=np.uint8).tobytes()


def readings_for(
    result: ContainerRead,
    *,
    lane: str,
    device: str,
    visit: str,
    ts: datetime,
    evidence: tuple[Evidence, ...],
) -> list[Reading]:
    """The readings of one visit's read of one container (see the module docstring)."""
    return readings_for_containers([(result, evidence)], lane=lane, device=device, visit=visit, ts=ts)


def readings_for_containers(
    reads: Sequence[tuple[ContainerRead, tuple[Evidence, ...]]],
    *,
    lane: str,
    device: str,
    visit: str,
    ts: datetime,
) -> list[Reading]:
    """The readings of one visit's read: one ``container_number`` per container (each with its
    crop), then the size/type codes, then ``passage_end`` with how many containers the frames
    showed, all bound to that visit: a read that comes after its visit was decided must not join
    the next truck's. Pure: no I/O."""
    numbers: list[Reading] = []
    sizes: list[Reading] = []
    for result, evidence in reads:
        number, *size = _container_readings(
            result, lane=lane, device=device, visit=visit, ts=ts, evidence=evidence
        )
        numbers.append(number)
        sizes.extend(size)
    count = max(1, len(reads))
    end = Reading(lane, Kind.OCR, device, Source.PASSAGE_END, count, ts, Quality.GOOD, visit=visit)
    return [*numbers, *sizes, end]


def _container_readings(
    result: ContainerRead,
    *,
    lane: str,
    device: str,
    visit: str,
    ts: datetime,
    evidence: tuple[Evidence, ...],
) -> list[Reading]:
    value: str | None = None
    quality = Quality.BAD
    if result.raw is not None:
        try:
            number = ContainerNumber.parse(result.raw, require_valid_check_digit=False)
        except ContainerNumberError:
            pass
        else:
            value = str(number)
            good = result.container is not None and number.check_digit_valid
            quality = Quality.GOOD if good else Quality.UNCERTAIN
    if quality is Quality.GOOD and not evidence:
        # A number nobody can check afterwards is not one to release a truck on.
        quality = Quality.UNCERTAIN
    readings = [
        Reading(
            lane,
            Kind.OCR,
            device,
            Source.CONTAINER_NUMBER,
            value,
            ts,
            quality,
            confidence=result.confidence,
            visit=visit,
            evidence=evidence,
        )
    ]
    if value is not None and result.size_type is not None:
        readings.append(
            Reading(
                lane,
                Kind.OCR,
                device,
                SIZE_TYPE_SOURCE,
                result.size_type,
                ts,
                Quality.GOOD if quality is Quality.GOOD else Quality.UNCERTAIN,
                confidence=result.confidence,
                visit=visit,
            )
        )
    return readings


def plate_reading_for(
    read: PlateRead,
    *,
    lane: str,
    device: str,
    visit: str,
    ts: datetime,
    evidence: tuple[Evidence, ...],
) -> Reading:
    """The ``licence_plate`` reading of one visit's plate read (see the module docstring). Pure."""
    value: str | None = None
    quality = Quality.BAD
    if read.candidate is not None:
        value = read.candidate
        # A plate nobody can check afterwards is not reported as read, as for numbers.
        quality = Quality.GOOD if read.plate is not None and evidence else Quality.UNCERTAIN
    elif read.raw is not None:
        value = "".join(char for char in read.raw.upper() if char.isascii() and char.isalnum()) or None
        quality = Quality.UNCERTAIN if value is not None else Quality.BAD
    return Reading(
        lane,
        Kind.OCR,
        device,
        Source.LICENCE_PLATE,
        value,
        ts,
        quality,
        confidence=read.confidence,
        visit=visit,
        evidence=evidence,
    )

"""`gated bench lanes`: how many simulated lanes one box sustains at peak, with real OCR.

Each lane is the demo's lane with four cameras: three container views (the doors, the left and the
right side of the box) and one plate view, all plain MJPEG cameras whose frames gated reads with
its own OCR pool. The RFID reader (pty), the radiation portal monitor (Modbus TCP) and the barrier
PLC (Modbus TCP) are the project's simulators on real transports; the daemon is the real one, in
this process, with a real broker (mosquitto, else the embedded amqtt) and SQLite.

The bench steps up the lanes (1, 2, 3, ...). In each step every lane sends a truck every
``headway`` seconds (staggered across lanes), or as soon as the previous one has left when it
takes longer (a lane holds one truck at the barrier; ``headway`` 0: back to back). A truck waits
at the barrier for its own decision, like the demo's trucks. A step is sustained when every truck
was decided, correctly, no lane fell behind, the p99 decision time of the trucks the machines
settled (RELEASE, HOLD, SECONDARY_INSPECTION) is under the bound, and every truck sent to a clerk
(MANUAL_REVIEW: the unreadable number) was decided within ``CLERK_BOUND_FACTOR`` times the bound.
Such a truck waits for the slow full reads of every view before it goes to the clerk, whose
handling takes far longer than the read: about 5 s with one lane on an idle 2-core box as with
nine, so one such truck a step would otherwise set the p99 whatever the box's load. The p99 of
all trucks is reported beside it (``decision_p99_s``).

Decision time: from the truck pulling up (its tag presented to the reader: the visit's trigger) to
its decision stored in SQLite (the daemon's decision listeners run after the commit). Each
decision is also counted as it arrives at an MQTT subscriber in its own process.
"""

from __future__ import annotations

import csv
import logging
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gated.bench.common import Mosquitto, free_port, machine, mosquitto_binary, progress
from gated.errors import GatedError
from gated.iso6346 import check_digit
from gated.messages import Topics
from gated.model import Decision, DeviceState, Outcome, Source, Visit

GOAL_TRUCKS_PER_HOUR = 1000
DEFAULT_MAX_LANES = 12
DEFAULT_SECONDS = 90.0
DEFAULT_P99_BOUND = 5.0
CLERK_BOUND_FACTOR = 2.0
"""A truck sent to a clerk is decided within this many times the p99 bound (module docstring)."""
CLERK = str(Outcome.MANUAL_REVIEW)
"""The outcome of a truck sent to a clerk."""
DEFAULT_HEADWAY = 30.0
QUICK_SECONDS = 60.0
QUICK_TRUCKS = 3
"""With --quick: one lane, three trucks back to back (two clean, one held), then stop."""
VIEWS = ("doors", "left side", "right side", "plate")
FRAMES_PER_VIEW = 2
DRAIN_SECONDS = 60.0
"""After a step's window, how long the trucks still at the barrier may take to be decided."""
READY_SECONDS = 120.0
"""How long a step waits for the OCR workers to load and for every device to be online."""
PROFILE = Path(__file__).resolve().parent.parent.parent / "config" / "profiles" / "rpm-modbus.toml"
HELD_HOLD_TYPE = "customs"


@dataclass(frozen=True)
class _Scripted:
    truck: Any  # simulators.lane.Truck (simulators load only when the bench runs)
    expected: Outcome
    container: str | None


@dataclass
class _Passage:
    """One truck's trip through a lane in a step."""

    scripted: _Scripted
    lane: str
    started: float
    late: float
    decided: float | None = None
    outcome: str | None = None
    container: str | None = None
    last_reading_lag: float | None = None


@dataclass
class _Step:
    lanes: int
    window: float
    passages: list[_Passage] = field(default_factory=list)
    unmatched: int = 0
    mqtt_decisions: int = 0
    ocr_workers: int = 0
    ocr_tasks: dict[str, int] = field(default_factory=dict)
    ocr_seconds: dict[str, float] = field(default_factory=dict)
    process_cpu_seconds: float = 0.0
    """CPU of this process over the window and drain: the daemon, the simulators, the bench."""


def _numbered(first_ten: str) -> str:
    return f"{first_ten}{check_digit(first_ten)}"


def lane_script(index: int) -> list[_Scripted]:
    """One lane's trucks, cycled: mostly clean boxes, one held, one radiation alarm, one unreadable."""
    from simulators.lane import ContainerSighting, Truck

    base = 300_000 + index * 100

    def tag(number: int) -> str:
        return f"e2801160600003{index:02d}{number:04d}"

    plate = "ABCDEFGHJKLMNPRS"[index % 16]
    trucks: list[_Scripted] = []
    kinds = ("clean", "clean", "held", "clean", "radiation", "unreadable")
    for number, kind in enumerate(kinds, start=1):
        owner = {"clean": "MSKU", "held": "TGHU", "radiation": "HLXU", "unreadable": "MSKU"}[kind]
        code = _numbered(f"{owner}{base + number:06d}")
        if kind == "unreadable":
            sighting = ContainerSighting("M?K 4#", confidence=0.21, size_type=None)
        else:
            sighting = ContainerSighting(code)
        truck = Truck(
            kind,
            tag(number),
            (sighting,),
            radiation="gamma" if kind == "radiation" else "clear",
            plate=f"LN{plate} {index % 10}{number:03d}",
        )
        expected = {
            "clean": Outcome.RELEASE,
            "held": Outcome.HOLD,
            "radiation": Outcome.SECONDARY_INSPECTION,
            "unreadable": Outcome.MANUAL_REVIEW,
        }[kind]
        trucks.append(_Scripted(truck, expected, None if kind == "unreadable" else code))
    return trucks


def _view_frames(truck: Any) -> tuple[Any, Any, Any]:
    """What the three container cameras see: the doors, then each side at its own angle."""
    from simulators.lane import truck_frames

    doors = truck_frames(truck)
    left = tuple(replace(spec, view="side", view_angle_deg=8.0) for spec in doors)
    right = tuple(replace(spec, view="side", view_angle_deg=-8.0) for spec in doors)
    return doors, left, right


class _Lane:
    """One lane's simulators: RFID reader, portal monitor, barrier PLC and four cameras."""

    def __init__(self, index: int) -> None:
        from simulators.barrier_plc import BarrierPlcSimulator
        from simulators.lane import LaneDevices, truck_front_frames
        from simulators.lane_camera import LaneCamera
        from simulators.rfid_serial import SerialRfidSimulator
        from simulators.rpm_modbus import ModbusRpmSimulator

        self.index = index
        self.id = f"lane-{index + 1}"
        self.script = lane_script(index)
        self.trucks = index
        """Where the lane is in its cycle: each lane starts one truck further on (so the lanes of a
        step show every kind at once, not all their clean first trucks) and each step goes on."""
        self.doors = LaneCamera(seed=index)
        self.left = LaneCamera(seed=1000 + index)
        self.right = LaneCamera(seed=2000 + index)
        self.plate = LaneCamera(seed=3000 + index)
        self.devices = LaneDevices(
            SerialRfidSimulator(),
            ModbusRpmSimulator(port=0),
            self.doors,
            BarrierPlcSimulator(),
            plate_camera=self.plate,
        )
        self.sides = (self.left, self.right)
        self.devices.start()
        for camera in self.sides:
            camera.start()
        self._front = truck_front_frames

    def paint(self, pool: ThreadPoolExecutor, trucks: int) -> list[Any]:
        """Paint the first ``trucks`` trucks' frames now (each camera caches them): painting
        1280x720 frames while the trucks drive would take the CPU the bench measures."""
        jobs = []
        for scripted in self.script[:trucks]:
            doors, left, right = _view_frames(scripted.truck)
            for camera, frames in (
                (self.doors, doors),
                (self.left, left),
                (self.right, right),
                (self.plate, self._front(scripted.truck)),
            ):
                jobs.append(pool.submit(_painted, camera, frames))
        return jobs

    def device_config(self) -> dict[str, Any]:
        barrier = self.devices.barrier
        assert barrier is not None
        return {
            "id": self.id,
            "require": ["rfid", "ocr", "rpm"],
            "settle_seconds": 0.5,
            "visit_timeout_seconds": 20.0,
            "ocr_wait_seconds": 60.0,
            "devices": [
                {"id": "rfid-1", "driver": "rfid-serial", "url": self.devices.rfid.device_path},
                {
                    "id": "rpm-1",
                    "driver": "rpm-modbus",
                    "host": "127.0.0.1",
                    "port": self.devices.rpm.port,
                    "profile": str(PROFILE),
                },
                {
                    "id": "ocr-1",
                    "driver": "ocr-frames",
                    "views": [self.doors.url, self.left.url, self.right.url],
                    "plate_views": [self.plate.url],
                    "pre_trigger_seconds": 0.5,
                    "post_trigger_seconds": 1.0,
                    "frames_per_view": FRAMES_PER_VIEW,
                },
                {
                    "id": "barrier-1",
                    "driver": "barrier-modbus",
                    "host": "127.0.0.1",
                    "port": barrier.port,
                    "lease_seconds": 10.0,
                    "release_window_seconds": 20.0,
                },
            ],
        }

    def stop(self) -> None:
        from simulators.lane import stop_all

        stop_all([*self.devices.all(), *self.sides])


def _painted(camera: Any, frames: Any) -> None:
    camera.arrive(frames)  # paints and caches this truck's frames; nobody watches the stream yet
    camera.depart()


class _Broker:
    """mosquitto when installed (as the benches and tests use it), else the embedded amqtt."""

    def __init__(self, folder: Path) -> None:
        self.mosquitto: Mosquitto | None = None
        self.embedded: Any = None
        try:
            mosquitto_binary()
        except GatedError:
            from gated.broker import EmbeddedBroker

            self.embedded = EmbeddedBroker("127.0.0.1", free_port())
            self.name = "amqtt (embedded)"
        else:
            self.mosquitto = Mosquitto(folder)
            self.name = "mosquitto"

    @property
    def port(self) -> int:
        if self.mosquitto is not None:
            return self.mosquitto.port
        port: int = self.embedded.port
        return port

    def start(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.start()
        else:
            self.embedded.start()

    def stop(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.stop()
        else:
            self.embedded.stop()


def _hold_list(path: Path, lanes: list[_Lane]) -> None:
    """Customs' list as the operator imports it: each lane's held box (it makes the list loaded)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["container", "agency", "hold_type", "code", "reference"])
        for lane in lanes:
            for scripted in lane.script:
                if scripted.expected is Outcome.HOLD:
                    writer.writerow([scripted.container, "CBP", HELD_HOLD_TYPE, "1H", f"BENCH-{lane.id}"])


def _run_step(
    folder: Path,
    broker: _Broker,
    site: str,
    lanes: list[_Lane],
    seconds: float,
    headway: float,
    max_trucks: int | None,
) -> _Step:
    from gated.bench.pipeline import _Subscriber
    from gated.config import validate
    from gated.daemon import Daemon
    from simulators.lane import ScriptedLane

    count = len(lanes)
    database = folder / f"step-{count}.db"
    config = validate(
        {
            "site": site,
            "node": "bench",
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": f"gated-{site}-{count}"},
            "storage": {"database": str(database), "evidence": str(folder / f"evidence-{count}")},
            "holds": {"max_age_seconds": 86_400},
            "lanes": [lane.device_config() for lane in lanes],
        },
        source="lanes bench",
    )
    daemon = Daemon(config)
    listing = folder / "holds.csv"
    _hold_list(listing, lanes)
    daemon.holds.import_holds(listing, actor="operator:bench", reason="the bench's hold list")
    step = _Step(count, seconds)
    current: dict[str, _Passage | None] = {lane.id: None for lane in lanes}
    decided = {lane.id: threading.Event() for lane in lanes}
    lock = threading.Lock()

    def on_decision(visit: Visit, decisions: list[Decision]) -> None:
        now = time.monotonic()
        tags = {str(reading.value) for reading in visit.of_source(Source.EPC)}
        last = max((reading.ts for reading in visit.readings), default=None)
        with lock:
            # The lane's latest undecided truck with this tag: a truck that left undecided still
            # gets its late decision (and its true time), not the truck now at the barrier.
            passage = next(
                (
                    p
                    for p in reversed(step.passages)
                    if p.lane == visit.lane and p.decided is None and p.scripted.truck.tag in tags
                ),
                None,
            )
            if passage is None:
                step.unmatched += len(decisions)
                return
            at_barrier = passage is current.get(visit.lane)
            passage.decided = now
            # One box per truck: one decision; a second one would be a wrong decision.
            outcomes = {str(decision.outcome) for decision in decisions}
            passage.outcome = outcomes.pop() if len(outcomes) == 1 and len(decisions) == 1 else "several"
            passage.container = decisions[0].container
            if last is not None:
                passage.last_reading_lag = (datetime.now(UTC) - last).total_seconds()
        if at_barrier:
            decided[visit.lane].set()

    daemon.on_decision(on_decision)
    subscriber = _Subscriber(broker.port, f"{Topics(site).prefix}/+/decision")
    stop = threading.Event()
    try:
        daemon.start()
        for engine, pool in daemon.ocr_pools.items():
            try:
                pool.ping().result(timeout=READY_SECONDS)
            except Exception as error:  # any failure: the bench cannot measure OCR
                raise GatedError(f"OCR engine {engine} not ready: {error!r}") from error
        _wait_online(daemon, [lane.id for lane in lanes])
        if not daemon.publisher.wait_connected(15):
            raise GatedError("gated did not connect to the bench's broker")
        start = time.monotonic()
        end = start + seconds
        finished: list[float] = []
        cpu_before = time.process_time()

        def drive(lane: _Lane, offset: float) -> None:
            scripted_lane = ScriptedLane(lane.devices, decided=decided[lane.id])
            due = start + offset
            trucks = 0
            while not stop.is_set() and (max_trucks is None or trucks < max_trucks):
                now = time.monotonic()
                if max(now, due) >= end:
                    break  # only trucks that pull up inside the window count
                if now < due and stop.wait(due - now):
                    break
                scripted = lane.script[lane.trucks % len(lane.script)]
                now = time.monotonic()
                passage = _Passage(scripted, lane.id, now, max(0.0, now - due))
                with lock:
                    current[lane.id] = passage
                    step.passages.append(passage)
                _, left, right = _view_frames(scripted.truck)
                lane.left.arrive(left)
                lane.right.arrive(right)
                try:
                    scripted_lane.drive(scripted.truck)
                finally:
                    lane.left.depart()
                    lane.right.depart()
                trucks += 1
                lane.trucks += 1
                # The next truck pulls up once this one has left, and not before its time.
                due = max(due + headway, time.monotonic() + 1.5)
            with lock:
                finished.append(time.monotonic())

        threads = [
            threading.Thread(
                target=drive, args=(lane, headway * index / count), name=f"bench-{lane.id}", daemon=True
            )
            for index, lane in enumerate(lanes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + DRAIN_SECONDS + 60.0)
        if daemon.failed is not None:
            raise GatedError(f"gated failed during the step: {daemon.failed}")
        if max_trucks is not None and finished:
            # A fixed number of trucks: the rate is over the time they took, not the whole window.
            step.window = min(seconds, max(finished) - start)
        step.process_cpu_seconds = time.process_time() - cpu_before
        step.ocr_workers = sum(pool.workers for pool in daemon.ocr_pools.values())
        for pool in daemon.ocr_pools.values():
            for name, done in pool.tasks_done.items():
                step.ocr_tasks[name] = step.ocr_tasks.get(name, 0) + done
                step.ocr_seconds[name] = step.ocr_seconds.get(name, 0.0) + pool.seconds_done[name]
        expected = sum(1 for passage in step.passages if passage.decided is not None)
        deadline = time.monotonic() + 15.0
        while daemon.store.outbox_depth() > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        step.mqtt_decisions = subscriber.wait_for(expected + step.unmatched)
    finally:
        stop.set()
        subscriber.stop()
        daemon.stop()
    return step


def _wait_online(daemon: Any, lane_ids: list[str]) -> None:
    """Until every device of every lane is online: a truck seen by an offline device goes to a clerk."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        states = [
            state for lane in lane_ids for state, _ in daemon.pipeline.lanes[lane].device_states.values()
        ]
        if all(state is DeviceState.ONLINE for state in states):
            return
        time.sleep(0.2)
    raise GatedError("the lanes' devices did not all come online")


def _p(values: list[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1], 2)


def _summary(step: _Step, bound: float, headway: float) -> dict[str, Any]:
    passages = step.passages
    times = [p.decided - p.started for p in passages if p.decided is not None]
    lags = [p.last_reading_lag for p in passages if p.last_reading_lag is not None]
    wrong = [
        p
        for p in passages
        if p.decided is not None
        and (p.outcome != str(p.scripted.expected) or p.container != p.scripted.container)
    ]
    undecided = sum(1 for p in passages if p.decided is None)
    behind = max((p.late for p in passages), default=0.0)
    p99 = _p(times, 0.99)
    decided = len(times)
    row: dict[str, Any] = {
        "lanes": step.lanes,
        "seconds": round(step.window, 1),
        "trucks": len(passages),
        "decided": decided,
        "trucks_per_hour": round(len(passages) * 3600 / step.window),
        "decision_p50_s": _p(times, 0.50),
        "decision_p99_s": p99,
        "decision_max_s": round(max(times), 2) if times else None,
        # Split: trucks the machines decided, and those sent to a clerk (their full reads come last).
        "decision_p99_machine_decided_s": _p(
            [p.decided - p.started for p in passages if p.decided is not None and p.outcome != CLERK],
            0.99,
        ),
        "decision_max_sent_to_clerk_s": max(
            (
                round(p.decided - p.started, 2)
                for p in passages
                if p.decided is not None and p.outcome == CLERK
            ),
            default=None,
        ),
        "last_reading_to_decision_p99_s": _p(lags, 0.99),
        "wrong_decisions": len(wrong) + step.unmatched,
        "undecided": undecided,
        "mqtt_decisions": step.mqtt_decisions,
        "outcomes": dict(Counter(p.outcome or "none" for p in passages)),
        "most_behind_s": round(behind, 1),
        # Which truck set the p99 (few trucks a step: p99 is close to the slowest one).
        "slowest_truck": max(
            (
                {"lane": p.lane, "truck": p.scripted.truck.label, "seconds": round(p.decided - p.started, 2)}
                for p in passages
                if p.decided is not None
            ),
            key=lambda slowest: float(slowest["seconds"]),
            default=None,
        ),
        "ocr_workers": step.ocr_workers,
        # Where a truck's CPU goes: each OCR step's tasks and worker seconds, and this process.
        "ocr_per_truck": {
            name: {
                "tasks": round(step.ocr_tasks[name] / len(passages), 2),
                "worker_seconds": round(step.ocr_seconds[name] / len(passages), 2),
            }
            for name in ("quick", "plate", "full")
            if passages and name in step.ocr_tasks
        },
        "process_cpu_seconds_per_truck": round(step.process_cpu_seconds / len(passages), 2)
        if passages
        else None,
    }
    problems = []
    machine_p99 = row["decision_p99_machine_decided_s"]
    clerk_max = row["decision_max_sent_to_clerk_s"]
    if machine_p99 is None and clerk_max is None:
        problems.append("no truck decided")
    if machine_p99 is not None and machine_p99 > bound:
        problems.append(f"p99 {machine_p99} s over {bound} s")
    if clerk_max is not None and clerk_max > CLERK_BOUND_FACTOR * bound:
        problems.append(f"a truck sent to a clerk after {clerk_max} s, over {CLERK_BOUND_FACTOR * bound:g} s")
    if undecided:
        problems.append(f"{undecided} trucks undecided")
    if wrong or step.unmatched:
        problems.append(f"{len(wrong) + step.unmatched} wrong decisions")
    if step.mqtt_decisions < decided:
        problems.append(f"{decided - step.mqtt_decisions} decisions not seen on MQTT")
    if headway > 0 and behind > headway:
        problems.append(f"trucks piled up ({behind:.0f} s behind)")
    row["sustained"] = not problems
    row["why_not"] = "; ".join(problems) or None
    if wrong:
        row["wrong"] = [
            {
                "lane": p.lane,
                "truck": p.scripted.truck.label,
                "expected": str(p.scripted.expected),
                "got": p.outcome,
                "container": p.container,
            }
            for p in wrong[:5]
        ]
    return row


def bench_lanes(
    quick: bool,
    *,
    max_lanes: int = DEFAULT_MAX_LANES,
    seconds: float | None = None,
    p99_bound: float = DEFAULT_P99_BOUND,
    headway: float | None = None,
) -> dict[str, Any]:
    """Step up the lanes until a step is not sustained (module docstring) or ``max_lanes``."""
    import uuid

    for name in ("gated", "drivers", "ocr", "simulators"):
        logging.getLogger(name).setLevel(logging.ERROR)  # progress lines only, not one per reading
    if max_lanes < 1 or p99_bound <= 0:
        raise GatedError("--max-lanes must be at least 1 and --p99-bound positive")
    window = seconds if seconds is not None else (QUICK_SECONDS if quick else DEFAULT_SECONDS)
    gap = headway if headway is not None else (0.0 if quick else DEFAULT_HEADWAY)
    top = 1 if quick else max_lanes
    site = f"bench-{uuid.uuid4().hex[:8]}"
    steps: list[dict[str, Any]] = []
    sustained: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="gated-bench-lanes-") as name:
        folder = Path(name)
        broker = _Broker(folder)
        broker.start()
        progress(f"{broker.name} on 127.0.0.1:{broker.port}; views per truck: {', '.join(VIEWS)}")
        lanes: list[_Lane] = []
        try:
            with ThreadPoolExecutor(2, thread_name_prefix="paint") as painters:
                for count in range(1, top + 1):
                    while len(lanes) < count:
                        lane = _Lane(len(lanes))
                        lanes.append(lane)
                        progress(f"{lane.id}: painting its trucks' frames")
                        for job in lane.paint(painters, QUICK_TRUCKS if quick else len(lane.script)):
                            job.result()
                    progress(f"step {count}: {count} lanes for {window:.0f} s, a truck every {gap:.0f} s")
                    step = _run_step(
                        folder, broker, site, lanes[:count], window, gap, QUICK_TRUCKS if quick else None
                    )
                    row = _summary(step, p99_bound, gap)
                    steps.append(row)
                    progress(
                        f"step {count}: {row['trucks']} trucks ({row['trucks_per_hour']}/h), "
                        f"p99 {row['decision_p99_machine_decided_s']} s "
                        f"(to a clerk: {row['decision_max_sent_to_clerk_s']} s), "
                        f"wrong {row['wrong_decisions']}, "
                        f"undecided {row['undecided']}: {'sustained' if row['sustained'] else row['why_not']}"
                    )
                    if not row["sustained"]:
                        break
                    sustained = row
        finally:
            for lane in lanes:
                lane.stop()
            broker.stop()
    best = sustained or {}
    per_hour = best.get("trucks_per_hour", 0)
    return {
        "bench": "lanes",
        "lanes": best.get("lanes", 0),
        "trucks_per_hour": per_hour,
        "decision_p99_s": best.get("decision_p99_s"),
        "decision_p99_machine_decided_s": best.get("decision_p99_machine_decided_s"),
        "decision_max_sent_to_clerk_s": best.get("decision_max_sent_to_clerk_s"),
        "decision_measured": "truck pulls up (its tag presented: the visit's trigger) to its decision "
        "stored in SQLite; every decision also counted at an MQTT subscriber",
        "p99_bound_s": p99_bound,
        "clerk_bound_s": CLERK_BOUND_FACTOR * p99_bound,
        "goal_trucks_per_hour": GOAL_TRUCKS_PER_HOUR,
        "goal_met": per_hour >= GOAL_TRUCKS_PER_HOUR,
        "wrong_decisions": sum(row["wrong_decisions"] for row in steps),
        "views_per_truck": len(VIEWS),
        "views": list(VIEWS),
        "frames_per_view": FRAMES_PER_VIEW,
        "headway_s": gap,
        "seconds_per_step": window,
        "truck_mix": "per 6 trucks: 3 clean, 1 held, 1 radiation alarm, 1 unreadable number",
        "ocr_workers": steps[0]["ocr_workers"] if steps else None,
        "broker": broker.name,
        "steps": steps,
        "machine": machine(),
    }

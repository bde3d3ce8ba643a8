"""The systemd unit: how exposed systemd rates it, whether systemd parses it cleanly, what it keeps
writable, and whether gated's OCR still runs inside the system call sandbox it declares.

None of this needs a running systemd: ``systemd-analyze security --offline=yes`` and
``systemd-analyze verify --root=`` read unit files only. The sandbox test applies the unit's
seccomp settings (SystemCallFilter=, SystemCallErrorNumber=, SystemCallArchitectures=native,
MemoryDenyWriteExecute=, RestrictAddressFamilies=, RestrictNamespaces=, CapabilityBoundingSet=,
NoNewPrivileges=) with libseccomp the way systemd builds them, to a child process that runs
``gated ocr``. File system settings (ProtectSystem= and the like) need systemd itself and are not
reproduced there.

Run as a module (``python -m tests.test_systemd SPEC COMMAND...``) this file is that child: it
installs the filters described by SPEC and then executes COMMAND.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "gated.service"
DROPINS = ROOT / "systemd" / "gated.service.d"
FRAME = ROOT / "tests" / "frames" / "rod-across-boxed-3.jpg"
FRAME_NUMBER = "GESU7275283"

MAX_EXPOSURE = 2.5
"""The highest overall exposure `systemd-analyze security` may give the unit."""

# The unit before it was hardened; systemd-analyze rated it 8.5 EXPOSED.
OLD_UNIT = """\
[Unit]
Description=gated port gate daemon
Documentation=https://github.com/gated/gated
Wants=network-online.target
After=network-online.target mosquitto.service

[Service]
Type=notify
NotifyAccess=main
User=gated
Group=gated
ExecStartPre=/opt/gated/venv/bin/gated check-config --config /etc/gated/gated.toml
ExecStart=/opt/gated/venv/bin/gated run --config /etc/gated/gated.toml
Restart=always
RestartSec=2
# gated pings the watchdog only while its pipeline, hold commands, publisher and drivers all turn;
# a daemon hung for this long is killed and restarted (an unexpected error already exits with 1).
WatchdogSec=30
# A config error will not fix itself: do not restart in a loop on exit 78 (EX_CONFIG).
RestartPreventExitStatus=78
StateDirectory=gated
TimeoutStopSec=30
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=/var/lib/gated
SupplementaryGroups=dialout

[Install]
WantedBy=multi-user.target
"""

TRUE = {"1", "yes", "true", "on"}


def _system_part(name: str, found: object, package: str = "systemd") -> None:
    """Skip when a system part is missing; fail instead under GATED_REQUIRE_SYSTEM=1 (as CI sets)."""
    if found:
        return
    message = f"{name} not found (install the Debian package {package})"
    if os.environ.get("GATED_REQUIRE_SYSTEM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    _system_part("systemd-analyze", found)
    assert found is not None
    return found


# --- reading unit files ------------------------------------------------------------------------


def service_settings(text: str) -> list[tuple[str, str]]:
    """The ``[Service]`` assignments of one unit file or drop-in, in order."""
    section = ""
    found: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def settings(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """The ``[Service]`` assignments of a unit file and then its drop-ins, in order."""
    return [pair for path in paths for pair in service_settings(path.read_text(encoding="utf-8"))]


def values(assignments: Sequence[tuple[str, str]], key: str) -> list[str]:
    """Every value given to a list setting; an empty assignment clears what came before."""
    result: list[str] = []
    for name, value in assignments:
        if name == key:
            result = [] if value == "" else [*result, value]
    return result


def last(assignments: Sequence[tuple[str, str]], key: str) -> str | None:
    """The value of a single-valued setting: the last assignment wins."""
    given = values(assignments, key)
    return given[-1] if given else None


def dropin(name: str) -> Path:
    return DROPINS / f"{name}.conf.example"


# --- systemd-analyze ---------------------------------------------------------------------------


def exposure(unit: Path) -> float:
    """The overall exposure level `systemd-analyze security` gives ``unit`` (named gated.service)."""
    result = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for gated\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1))


def verify(tmp_path: Path, unit_text: str, dropins: dict[str, str] | None = None) -> str:
    """All `systemd-analyze verify` says about the unit, checked in a throwaway root.

    The unit starts /opt/gated/venv/bin/gated, which a build machine does not have, and verify
    reports a missing binary as a problem. Rather than rewrite ExecStart= (and verify a different
    unit), the unit goes unchanged into a root of its own that holds a stub for every binary it
    starts and a copy of systemd's own units (the targets it is ordered against); ``--root`` makes
    verify look up both there. So whatever verify prints is a real problem of the unit."""
    units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
    )
    _system_part("systemd's unit folder", units)
    assert units is not None
    root = tmp_path / "root"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecReload"):
        for command in values(service_settings(unit_text), key):
            binary = root / command.lstrip("-@:+!").split()[0].lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\n")
            binary.chmod(0o755)
    system = root / "etc/systemd/system"
    (system / "gated.service.d").mkdir(parents=True)
    (system / "gated.service").write_text(unit_text, encoding="utf-8")
    for name, text in (dropins or {}).items():
        (system / "gated.service.d" / f"{name}.conf").write_text(text, encoding="utf-8")
    result = subprocess.run(
        [_analyze(), "verify", "--no-pager", f"--root={root}", "gated.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and unparsable values, so its output is what counts.
    return (result.stdout + result.stderr).strip() + (
        "" if result.returncode == 0 else f"\nexit {result.returncode}"
    )


def test_the_unit_is_rated_well_protected() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


def test_the_old_unit_would_not_pass(tmp_path: Path) -> None:
    """The exposure check bites: the unit as it was before hardening scores above the limit."""
    old = tmp_path / "gated.service"
    old.write_text(OLD_UNIT, encoding="utf-8")
    assert exposure(old) > MAX_EXPOSURE


def test_systemd_finds_nothing_wrong_with_the_unit_or_its_dropins(tmp_path: Path) -> None:
    unit = UNIT.read_text(encoding="utf-8")
    assert verify(tmp_path / "alone", unit) == ""
    examples = {
        path.name.removesuffix(".conf.example"): path.read_text(encoding="utf-8")
        for path in DROPINS.glob("*.conf.example")
    }
    assert {"nii-inbox", "ip-allow", "easyocr"} <= examples.keys()
    assert verify(tmp_path / "with-dropins", unit, examples) == ""


def test_verify_reports_a_mistyped_setting(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    unit = UNIT.read_text(encoding="utf-8")
    broken = unit.replace("ProtectSystem=strict", "ProtectSytem=strict").replace("UMask=0027", "UMask=banana")
    report = verify(tmp_path, broken)
    assert "Unknown key 'ProtectSytem'" in report
    assert "banana" in report


def test_the_unit_keeps_what_gated_relies_on() -> None:
    unit = settings([UNIT])
    assert last(unit, "Type") == "notify"
    assert last(unit, "NotifyAccess") == "main"
    assert last(unit, "WatchdogSec") == "30"
    assert last(unit, "RestartPreventExitStatus") == "78"
    assert any(" check-config " in command for command in values(unit, "ExecStartPre"))
    assert last(unit, "User") == "gated"
    assert last(unit, "Group") == "gated"
    assert "dialout" in (last(unit, "SupplementaryGroups") or "").split()
    assert last(unit, "UMask") == "0027"
    assert last(unit, "StateDirectory") == "gated"
    assert last(unit, "StateDirectoryMode") == "0750"
    assert last(unit, "ProtectSystem") == "strict"
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert (key, "") in unit and values(unit, key) == [], f"{key}= must be empty"
    assert (last(unit, "NoNewPrivileges") or "no") in TRUE
    # Serial ports stay reachable: no PrivateDevices=, a closed device policy with the tty majors.
    assert (last(unit, "PrivateDevices") or "no") not in TRUE
    assert last(unit, "DevicePolicy") == "closed"
    assert {"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"} <= set(values(unit, "DeviceAllow"))


EXEC_DIRECTORIES = {
    "RuntimeDirectory": Path("/run"),
    "StateDirectory": Path("/var/lib"),
    "CacheDirectory": Path("/var/cache"),
    "LogsDirectory": Path("/var/log"),
    "ConfigurationDirectory": Path("/etc"),
}
"""Where each *Directory= setting puts its folders; each implies a writable bind mount."""


def _writable(assignments: Sequence[tuple[str, str]]) -> list[Path]:
    """The folders ProtectSystem=strict leaves writable."""
    made = [
        base / name
        for key, base in EXEC_DIRECTORIES.items()
        for value in values(assignments, key)
        for name in value.split()
    ]
    extra = [
        Path(path.lstrip("-+")) for value in values(assignments, "ReadWritePaths") for path in value.split()
    ]
    return made + extra


def _covered(path: Path, writable: Sequence[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in writable)


def test_gated_can_write_its_storage_and_the_nii_inbox_the_example_config_names() -> None:
    from gated.config import load_config

    config = load_config(ROOT / "config" / "multi-lane.toml")
    inboxes = [
        Path(device.inbox)
        for lane in config.lanes
        for device in lane.devices
        if device.driver == "nii-folder"
    ]
    assert inboxes, "config/multi-lane.toml has no nii-folder device to check"

    unit = settings([UNIT])
    writable = _writable(unit)
    for path in (config.storage.database, config.storage.evidence):
        assert _covered(Path(path), writable), f"{path} is read-only under the unit"
    for inbox in inboxes:
        # The unit alone leaves the inbox read-only (moving scans into done/ would fail) ...
        assert not _covered(inbox / "done", writable)
        # ... and the drop-in example makes it, with its done/ and quarantine/, writable.
        with_dropin = _writable(settings([UNIT, dropin("nii-inbox")]))
        assert _covered(inbox / "done", with_dropin) and _covered(inbox / "quarantine", with_dropin)


def test_the_config_gated_runs_with_is_read_only() -> None:
    unit = settings([UNIT])
    commands = values(unit, "ExecStartPre") + values(unit, "ExecStart")
    configs = [Path(command.split("--config ")[1].split()[0]) for command in commands]
    assert configs and all(config == Path("/etc/gated/gated.toml") for config in configs)
    assert not any(_covered(config, _writable(unit)) for config in configs)


def test_the_ip_allow_list_example_denies_everything_else() -> None:
    both = settings([UNIT, dropin("ip-allow")])
    assert values(both, "IPAddressDeny") == ["any"]
    assert "localhost" in values(both, "IPAddressAllow")


# --- the system call sandbox -------------------------------------------------------------------

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
"""CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET."""


def scmp_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


@dataclass(frozen=True)
class Sandbox:
    """The seccomp part of a unit, as systemd would install it."""

    allow: list[str]
    error: int | None  # errno of a refused call; None kills the process (systemd's default)
    memory_deny_write_execute: bool
    families: list[int] | None
    restrict_namespaces: bool
    no_capabilities: bool


def syscall_groups() -> dict[str, list[str]]:
    """systemd's named system call sets, as this systemd defines them."""
    text = subprocess.run(
        [_analyze(), "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith(" ") and current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def sandbox_of(assignments: Sequence[tuple[str, str]]) -> Sandbox:
    groups = syscall_groups()

    def expand(name: str) -> set[str]:
        if not name.startswith("@"):
            return {name}
        return set().union(*(expand(member) for member in groups[name]))

    allow: set[str] | None = None
    for value in values(assignments, "SystemCallFilter"):
        invert = value.startswith("~")
        if allow is None:
            assert not invert, "the test models an allow-list filter, as the unit has"
            allow = expand("@default")  # systemd always allows these on an allow-list
        for name in value.lstrip("~").split():
            allow = allow - expand(name) if invert else allow | expand(name)
    assert allow is not None, "the unit has no SystemCallFilter="
    assert last(assignments, "SystemCallArchitectures") == "native"  # libseccomp's default
    assert (last(assignments, "NoNewPrivileges") or "no") in TRUE  # set below in any case
    error_name = last(assignments, "SystemCallErrorNumber")
    families = last(assignments, "RestrictAddressFamilies")
    return Sandbox(
        allow=sorted(allow),
        error=None if error_name in (None, "kill") else int(getattr(errno, str(error_name))),
        memory_deny_write_execute=(last(assignments, "MemoryDenyWriteExecute") or "no") in TRUE,
        families=None if families is None else [int(socket.AddressFamily[name]) for name in families.split()],
        restrict_namespaces=(last(assignments, "RestrictNamespaces") or "no") in TRUE,
        no_capabilities=("CapabilityBoundingSet", "") in assignments
        and not values(assignments, "CapabilityBoundingSet"),
    )


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp")
    _system_part("libseccomp", name, "libseccomp2")
    return ctypes.CDLL(name, use_errno=True)


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def _install(sandbox: Sandbox) -> None:
    """Install the filters in this process, in systemd's order: the system call allow-list last."""
    lib = _libseccomp()
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_Cmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

    def number(name: str) -> int:
        return int(lib.seccomp_syscall_resolve_name(name.encode()))

    def rule(ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        array = (_Cmp * len(cmps))(*(_Cmp(*cmp) for cmp in cmps)) if cmps else None
        result = lib.seccomp_rule_add_array(ctx, action, number(name), len(cmps), array)
        if result < 0:
            raise OSError(-result, f"seccomp rule for {name}: {os.strerror(-result)}")

    filters: list[int] = []
    if sandbox.memory_deny_write_execute:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        rule(
            ctx,
            scmp_errno(errno.EPERM),
            "mmap",
            (2, SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC),
        )
        for name in ("mprotect", "pkey_mprotect"):
            rule(ctx, scmp_errno(errno.EPERM), name, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        rule(ctx, scmp_errno(errno.EPERM), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        filters.append(ctx)
    if sandbox.families is not None:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        for family in range(64):
            if family not in sandbox.families:
                rule(ctx, scmp_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, family, 0))
        rule(ctx, scmp_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_GT, 63, 0))
        filters.append(ctx)
    if sandbox.restrict_namespaces:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        # clone3's flags cannot be inspected: systemd answers ENOSYS so that glibc falls back to clone.
        rule(ctx, scmp_errno(errno.ENOSYS), "clone3")
        rule(ctx, scmp_errno(errno.EPERM), "setns")
        for flag in NAMESPACE_FLAGS:
            for name in ("clone", "unshare"):
                rule(ctx, scmp_errno(errno.EPERM), name, (0, SCMP_CMP_MASKED_EQ, flag, flag))
        filters.append(ctx)
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS if sandbox.error is None else scmp_errno(sandbox.error))
    for name in sandbox.allow:
        if number(name) >= 0:  # names of other architectures do not resolve here
            rule(ctx, SCMP_ACT_ALLOW, name)
    filters.append(ctx)

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if sandbox.no_capabilities and os.geteuid() == 0:  # root then keeps no capability across exec
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        for cap in range(last_cap + 1):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")
    for ctx in filters:
        result = lib.seccomp_load(ctx)
        if result < 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")


def run_sandboxed(
    sandbox: Sandbox, command: Sequence[str], home: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` under ``sandbox``, with a read-only home like the service's."""
    _libseccomp()
    home.mkdir(exist_ok=True)
    home.chmod(0o555)
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tests.test_systemd", json.dumps(asdict(sandbox)), *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


PROBE = """
import errno, mmap, os, socket
def refused(call, *args):
    try:
        call(*args)
    except OSError as error:
        return errno.errorcode[error.errno]
    return "allowed"
print("wx-memory", refused(mmap.mmap, -1, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
print("netlink", refused(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW))
print("setpriority", refused(os.setpriority, os.PRIO_PROCESS, 0, 5))
print("setuid", refused(os.setuid, 0))
print("inet", refused(lambda: socket.socket(socket.AF_INET6).close()))
"""


def test_the_sandbox_refuses_what_the_unit_refuses(tmp_path: Path) -> None:
    """The reproduction is no no-op: W+X memory, a netlink socket and the @resources and
    @privileged calls are refused; an IPv6 socket is not."""
    result = run_sandboxed(sandbox_of(settings([UNIT])), [sys.executable, "-c", PROBE], tmp_path / "home")
    assert result.returncode == 0, result.stderr
    seen = dict(line.split() for line in result.stdout.splitlines())
    assert seen == {
        "wx-memory": "EPERM",
        "netlink": "EAFNOSUPPORT",
        "setpriority": "EPERM",
        "setuid": "EPERM",
        "inet": "allowed",
    }


def _read_frame(sandbox: Sandbox, engine: str, home: Path) -> dict[str, Any]:
    gated = Path(sys.executable).parent / "gated"
    result = run_sandboxed(sandbox, [str(gated), "ocr", "--engine", engine, "--json", str(FRAME)], home)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    assert "error" not in report, report
    return report


def test_rapidocr_reads_a_container_inside_the_unit_sandbox(tmp_path: Path) -> None:
    """The default engine (ONNX Runtime, numpy's OpenBLAS, OpenCV) needs no refused call and no
    W+X memory: the same number as outside."""
    report = _read_frame(sandbox_of(settings([UNIT])), "rapidocr", tmp_path / "home")
    assert report["container"] == FRAME_NUMBER


def test_check_config_gives_the_same_verdict_inside_the_unit_sandbox(tmp_path: Path) -> None:
    """ExecStartPre runs in the same sandbox. The example config lacks its TLS files here, so the
    verdict is exit 78 naming them, inside as outside (not a process killed by the filter)."""
    command = [
        str(Path(sys.executable).parent / "gated"),
        "check-config",
        "--config",
        str(ROOT / "config/one-lane.toml"),
    ]
    outside = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    inside = run_sandboxed(sandbox_of(settings([UNIT])), command, tmp_path / "home")
    assert (inside.returncode, inside.stderr) == (outside.returncode, outside.stderr)
    assert inside.returncode == 78 and "mqtt.tls" in inside.stderr


def test_easyocr_reads_inside_the_unit_sandbox_with_its_dropin(tmp_path: Path) -> None:
    """EasyOCR (PyTorch) needs W+X memory: with easyocr.conf.example it reads the frame."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("easyocr") is None:
        pytest.skip("easyocr is not installed (an optional engine)")
    sandbox = sandbox_of(settings([UNIT, dropin("easyocr")]))
    assert not sandbox.memory_deny_write_execute
    report = _read_frame(sandbox, "easyocr", tmp_path / "home")
    assert report["engine"] == "easyocr"
    # EasyOCR misreads this frame's check digit (outside the sandbox too); the rest is read.
    assert str(report["raw"])[:10] == FRAME_NUMBER[:10]


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    _install(Sandbox(**spec))
    os.execvp(sys.argv[2], sys.argv[2:])

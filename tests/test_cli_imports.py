"""What each light command loads: `gated --help`, `holds list`, `query` and `check-config` must
start without the OCR engines, the demo's broker or the simulators, and the daemon's own modules
never import a simulator. Each check runs `python -X importtime -m gated ...` in a fresh process."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gated
from gated.db import open_engine
from tests.tls import Pki

ROOT = Path(__file__).resolve().parent.parent

# Loaded only by the commands that need them: `gated ocr`, `gated bench ocr`, `gated demo`.
ENGINES_BROKER_SIMULATORS = ("torch", "onnxruntime", "rapidocr", "easyocr", "amqtt", "simulators")
# Loaded only to decode images (`gated ocr`, the daemon's frames cameras, the OCR bench) or to
# print a gate pass.
IMAGES = ("cv2", "numpy", "escpos", "PIL")


def _imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -m gated ARGS``; the top-level names of every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gated", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "gated" in names, done.stderr[-2000:]
    return done, names


def _one_lane_config(folder: Path) -> Path:
    """config/one-lane.toml with the TLS files it names made for the test, so it validates."""
    shutil.copytree(ROOT / "config", folder / "config")
    pki = Pki(folder / "config" / "tls")
    pki.client("gate-1")
    return folder / "config" / "one-lane.toml"


def _light_commands(tmp_path: Path) -> dict[str, tuple[str, ...]]:
    database = str(tmp_path / "gated.db")
    open_engine(database).dispose()  # the read-only commands refuse a database that is not there
    return {
        "holds list": ("holds", "list", "--db", database),
        "query": ("query", "MSKU4135329", "--db", database),
        "check-config": ("check-config", "--config", str(_one_lane_config(tmp_path))),
    }


def test_help_loads_no_engine_broker_simulator_or_image_library(tmp_path: Path) -> None:
    done, names = _imported("--help", cwd=tmp_path)
    assert done.returncode == 0 and "check-config" in done.stdout
    assert names.isdisjoint(ENGINES_BROKER_SIMULATORS + IMAGES), sorted(names)


@pytest.mark.parametrize("command", ["holds list", "query", "check-config"])
def test_light_command_loads_no_ocr_engine_broker_or_simulator(command: str, tmp_path: Path) -> None:
    done, names = _imported(*_light_commands(tmp_path)[command], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert names.isdisjoint(ENGINES_BROKER_SIMULATORS), sorted(names & set(ENGINES_BROKER_SIMULATORS))


@pytest.mark.parametrize("command", ["holds list", "query", "check-config"])
def test_light_command_loads_no_image_library(command: str, tmp_path: Path) -> None:
    done, names = _imported(*_light_commands(tmp_path)[command], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert names.isdisjoint(IMAGES), sorted(names & set(IMAGES))


def test_the_daemons_modules_import_no_simulator_and_no_broker() -> None:
    """Every module of the gated package but the benchmarks (which drive simulated devices),
    ``__main__`` (which runs the command line) and the migrations (which run inside alembic)."""
    modules = [
        info.name
        for info in pkgutil.walk_packages(gated.__path__, "gated.")
        if not info.name.startswith(("gated.bench", "gated.__main__", "gated.migrations"))
    ]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'simulators', 'amqtt'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gated.daemon" in modules and "gated.cli.demo" in modules
    assert done.stdout.strip() == "[]"


def test_demo_without_amqtt_says_how_to_install_it_in_one_line(tmp_path: Path) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable.
    probe = (
        "import sys\nsys.modules['amqtt'] = None\nfrom gated.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "demo", "--duration", "5", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'gated[demo]'" in lines[0], done.stderr

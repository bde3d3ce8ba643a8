"""`gated-sim`: run one device simulator on its real protocol, for integrators without hardware."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from simulators import (
    barrier_plc,
    camera_frames,
    credential_serial,
    nii_scanner,
    ocr_camera,
    printer_escpos,
    rfid_llrp,
    rfid_serial,
    rpm_modbus,
    rpm_rapiscan,
    scenario,
)
from simulators.lifecycle import CannotListen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gated-sim",
        description="Device simulators speaking the real protocols on real ports and ptys.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    devices = parser.add_subparsers(dest="device", metavar="DEVICE", required=True)
    rfid_serial.register_cli(devices)
    rfid_llrp.register_cli(devices)
    rpm_modbus.register_cli(devices)
    rpm_rapiscan.register_cli(devices)
    ocr_camera.register_cli(devices)
    camera_frames.register_cli(devices)
    barrier_plc.register_cli(devices)
    printer_escpos.register_cli(devices)
    credential_serial.register_cli(devices)
    nii_scanner.register_cli(devices)
    scenario.register_cli(devices)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except CannotListen as error:
        print(f"{args.device}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

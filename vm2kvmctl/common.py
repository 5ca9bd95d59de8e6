"""What every vm2kvmctl command shares: exit codes, the context, the one error line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console

from vm2kvmd.constants import JOBS_PATH, job_path

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_UNREACHABLE: Final = 2
EXIT_USAGE: Final = 2  # as argparse
EXIT_INTERRUPTED: Final = 130


class UsageError(Exception):
    """A wrong argument found after parsing (exit 2)."""


@dataclass
class Context:
    args: argparse.Namespace
    out: Console  # results: stdout
    err: Console  # progress and warnings: stderr

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def print_json(self, data: Any) -> None:
        self.out.out(json.dumps(data, indent=2, sort_keys=False), highlight=False)


def error_line(message: str) -> None:
    print(f"vm2kvmctl: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def parse_job(text: str) -> str:
    if text.isdigit() and int(text) > 0:
        return job_path(int(text))
    if text.startswith(JOBS_PATH + "/") and text.rsplit("/", 1)[1].isdigit():
        return text
    raise UsageError(f"JOB must be a job number or a job object path, not {text!r}")

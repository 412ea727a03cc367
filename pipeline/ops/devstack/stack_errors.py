"""The errors of the local stack: each one carries a one-line message that says what to do."""

from __future__ import annotations

from pipeline.errors import PipelineError

INSTALL_HINT = (
    "run deploy/toolchain.sh as root, "
    "or apt-get install -y maven openjdk-17-jdk-headless (Debian/Ubuntu) "
    "or brew install maven openjdk@17 (macOS)"
)


class StackError(PipelineError):
    """The local stack could not do what was asked; the message names the log to read."""


class StackNotRunning(StackError):
    """A server address was needed, none was configured and the local stack is not running."""


class ToolMissing(StackError):
    """A program the local stack needs (java, mvn) is not installed or too old."""

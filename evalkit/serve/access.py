"""Who may reach the server: loopback by default; any other address only with a user name and password."""

from __future__ import annotations

from pathlib import Path

from evalkit.core.errors import EvalkitError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASSWORD``, or a file whose first line is that; None when not given."""
    if value is None:
        return None
    text, what = value, "--auth"
    path = Path(value).expanduser()
    if ":" not in value or path.is_file():
        if not path.is_file():
            raise EvalkitError(f"--auth {value!r}: give USER:PASSWORD or a file holding that line")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise EvalkitError(f"cannot read --auth file {path}: {type(err).__name__}") from None
        text, what = (lines[0].strip() if lines else ""), f"--auth file {path}"
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise EvalkitError(f"{what}: expected USER:PASSWORD with both parts non-empty")
    return user, password


def check_host(host: str, auth: tuple[str, str] | None) -> None:
    """Refuse to listen beyond this machine without a password."""
    if host not in LOOPBACK_HOSTS and auth is None:
        raise EvalkitError(f"--host {host} makes the server reachable from other machines; "
                           "add --auth USER:PASSWORD (or --auth FILE) or keep --host 127.0.0.1")

"""Passwords the user asked to keep, in the system keyring only.

Never in QSettings, never on disk in plain text: where no keyring exists
(a headless box), nothing is saved and the dialog says so.
"""

from __future__ import annotations

SERVICE = "chat-client"


def _keyring():
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        return None
    return keyring


def available() -> bool:
    return _keyring() is not None


def account(host: str, port: int, nick: str) -> str:
    return f"{nick}@{host}:{port}"


def load(host: str, port: int, nick: str) -> str | None:
    ring = _keyring()
    if ring is None:
        return None
    try:
        return ring.get_password(SERVICE, account(host, port, nick))
    except Exception:  # a locked or broken keyring: as if nothing was saved
        return None


def save(host: str, port: int, nick: str, password: str | None) -> bool:
    """Keep (or, with None, forget) a password; False if there is no keyring."""
    ring = _keyring()
    if ring is None:
        return False
    try:
        if password is None:
            ring.delete_password(SERVICE, account(host, port, nick))
        else:
            ring.set_password(SERVICE, account(host, port, nick), password)
    except Exception:
        return False
    return True

"""Passwords the user asked to keep: in the system keyring, or in this
process's memory for as long as it runs.

Never in QSettings, never on disk in plain text: where no keyring exists
(a headless box), nothing is saved and the dialog says why, and the user
may keep it in memory instead so reconnecting and Connect… don't ask again.
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


def unavailable_reason() -> str | None:
    """Why no keyring can keep a password here, for the user; None if one can."""
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return "the keyring package is not installed"
    backend = keyring.get_keyring()
    name = f"{type(backend).__module__.removeprefix('keyring.backends.')}.{type(backend).__qualname__}"
    if isinstance(backend, null.Keyring):
        return f"the keyring is switched off (keyring backend {name})"
    if isinstance(backend, fail.Keyring):
        try:
            backend.get_password(SERVICE, "probe")
            said = ""
        except Exception as e:  # fail.Keyring says why it fails only by raising
            said = f": {str(e).split('. ')[0].rstrip('.')}"
        return f"no Secret Service or other system keyring is running (keyring backend {name}{said})"
    return None


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


class SessionPasswords:
    """Passwords kept in memory for the life of the process ("Remember for
    this session"): for when there is no keyring, or the user wants none."""

    def __init__(self) -> None:
        self._kept: dict[str, str] = {}

    def load(self, host: str, port: int, nick: str) -> str | None:
        return self._kept.get(account(host, port, nick))

    def save(self, host: str, port: int, nick: str, password: str | None) -> None:
        """Keep, or with None forget, the password of nick@host:port."""
        if password is None:
            self._kept.pop(account(host, port, nick), None)
        else:
            self._kept[account(host, port, nick)] = password


#: This process's memory ("Remember for this session").
remembered = SessionPasswords()


def find(host: str, port: int, nick: str, memory: SessionPasswords = remembered) -> str | None:
    """The password kept for nick@host:port, in memory first, then the keyring."""
    return memory.load(host, port, nick) or load(host, port, nick)


def replace(
    host: str, port: int, nick: str, password: str | None, memory: SessionPasswords = remembered
) -> None:
    """The account's password changed (or, with None, the account is gone):
    wherever one was kept, the new one is kept instead (or it is forgotten)."""
    if memory.load(host, port, nick) is not None:
        memory.save(host, port, nick, password)
    if load(host, port, nick) is not None:
        save(host, port, nick, password)

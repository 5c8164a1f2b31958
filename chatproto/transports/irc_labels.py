"""IRCv3 labeled-response (docs/protocol.md, 17.10), in one place.

A request tagged ``label=L`` from a client with ``labeled-response`` gets
its answer tagged with it: the lines the request wrote while it was handled,
or, when it wrote none and sent one packet that is answered later (the
sender's own copy of a PRIVMSG, TOPIC, MODE...: what carries its ``ref``),
what that answer renders. No line is ``ACK``, one line is tagged itself,
several go in a ``labeled-response`` BATCH.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from chatproto.transports.irc_conversations import escape_tag
from chatproto.transports.outbox import Outbox

#: Bytes of a label we echo; a longer one is ignored (the request is answered plainly).
LABEL_BYTES = 64
#: Requests whose answer may come after the line is handled (their ref's command).
LATER = frozenset({"PRIVMSG", "NOTICE", "TOPIC", "MODE", "KICK", "INVITE", "NICK", "TAGMSG", "REDACT"})
#: Labels that may wait for a later answer, per connection: past it the oldest is dropped.
WAITING = 16

_BATCHES = itertools.count(1)


class CapturingOutbox(Outbox[Any]):
    """An outbox that, while ``capture`` is a list, collects what is written
    instead of sending it: the lines of one labeled request."""

    __slots__ = ("capture",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.capture: list[bytes] | None = None

    def start(self) -> bool:
        """Capture from now on; False if already capturing (nested: left as is)."""
        if self.capture is not None:
            return False
        self.capture = []
        return True

    def take(self) -> list[bytes] | None:
        """Stop capturing: what was captured (None if a close sent it already)."""
        captured, self.capture = self.capture, None
        return captured

    def write(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.append(data)
        else:
            super().write(data)

    deliver = write  # what the core delivers is captured too

    def close(self, final: bytes | None = None, *, flush: bool = True) -> None:
        """Closing mid-request (QUIT): what was captured goes first, plainly."""
        captured, self.capture = self.capture, None
        if captured:
            super().write(b"".join(captured))
        super().close(final, flush=flush)


def with_label(data: bytes, label: str, server: str) -> bytes:
    """IRC lines as the answer to a request labeled ``label``."""
    lines = data.decode("utf-8").split("\r\n")[:-1] if data else []
    tag = "label=" + escape_tag(label)
    if not lines:
        return f"@{tag} :{server} ACK\r\n".encode()
    if len(lines) == 1:
        return (_tagged(lines[0], tag) + "\r\n").encode("utf-8")
    batch = f"l{next(_BATCHES)}"
    out = [f"@{tag} :{server} BATCH +{batch} labeled-response"]
    # A line of a batch of its own (CHATHISTORY's) stays in it; that
    # batch's BATCH lines go in ours (IRCv3 batch nests so).
    out.extend(text if _in_batch(text) else _tagged(text, f"batch={batch}") for text in lines)
    out.append(f":{server} BATCH -{batch}")
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _in_batch(text: str) -> bool:
    if not text.startswith("@"):
        return False
    tags = text[1:].partition(" ")[0]
    return any(tag.startswith("batch=") for tag in tags.split(";"))


def _tagged(text: str, tag: str) -> str:
    if text.startswith("@"):
        return f"@{tag};{text[1:]}"
    return f"@{tag} {text}"


class Labels:
    """One connection's labels: the request being handled, and those
    waiting for a later answer (by the ref of the packet they sent)."""

    __slots__ = ("_answered", "_current", "_held", "_refs", "_waiting", "server")

    def __init__(self, server: str) -> None:
        self.server = server
        self._current: str | None = None  # the label of the answer being rendered
        self._held = False  # that label was taken (hold) for a line rendered later
        self._refs: list[str] | None = None  # refs of the packets the labeled request sent
        self._answered = False  # a packet with a ref was shown while it was handled
        self._waiting: OrderedDict[str, deque[str]] = OrderedDict()

    def sent(self, ref: str | None) -> None:
        """The request being handled sent a packet with this ref."""
        if self._refs is not None and ref is not None:
            self._refs.append(ref)

    def request(self, outbox: Outbox, label: str, handle: Callable[[], None]) -> None:
        """Handle one labeled request, and answer it with its label."""
        if not isinstance(outbox, CapturingOutbox) or not outbox.start():
            handle()  # not capturing (or already): answered plainly
            return
        refs: list[str] = []
        self._refs, self._answered = refs, False
        self._current, self._held = label, False
        try:
            handle()
        finally:
            captured = outbox.take()
            self._refs = None
            held, self._current, self._held = self._held, None, False
        if captured is None or outbox.closed:  # closed while handled: sent plainly
            return
        if held:  # its answer is a line still to come (hold)
            if captured:
                outbox.write(b"".join(captured))
            return
        if not captured and not self._answered and len(refs) == 1 and refs[0].partition(" ")[0] in LATER:
            self._wait(refs[0], label)
            return
        outbox.write(with_label(b"".join(captured), label, self.server))

    def _wait(self, ref: str, label: str) -> None:
        labels = self._waiting.get(ref)
        if labels is None:
            if len(self._waiting) >= WAITING:
                self._waiting.popitem(last=False)
            labels = self._waiting[ref] = deque(maxlen=WAITING)
        labels.append(label)

    def answer(self, outbox: Outbox, ref: str | None, render: Callable[[], None]) -> None:
        """A packet for this connection alone, with ``ref``: labeled if a
        request waits for it, else rendered plainly."""
        if self._refs is not None and ref is not None:
            self._answered = True  # answered (a refusal) while the labeled request is handled
        labels = self._waiting.get(ref) if ref is not None else None
        if not labels or not isinstance(outbox, CapturingOutbox) or not outbox.start():
            render()
            return
        assert ref is not None
        label = labels.popleft()
        if not labels:
            del self._waiting[ref]
        self._current, self._held = label, False
        try:
            render()
        finally:
            captured = outbox.take()
            held, self._current, self._held = self._held, None, False
        if captured is None or outbox.closed:
            return
        if held:
            if captured:
                outbox.write(b"".join(captured))
        else:
            outbox.write(with_label(b"".join(captured), label, self.server))

    def hold(self, ref: str) -> str | None:
        """The label of the request being handled or answered, taken by the
        caller for a line that comes later (a KICK comes with the LEFT after
        its record): what is written meanwhile is not labeled, nor ACKed.
        None if what is answered is not the packet with ``ref``."""
        if self._refs is not None and ref not in self._refs:
            return None  # another request's answer, come while this one is handled
        label, self._current = self._current, None
        if label is not None:
            self._held = True
        return label

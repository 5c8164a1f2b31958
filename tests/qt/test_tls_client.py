"""The desktop client over TLS: verification, and trust on first use."""

from __future__ import annotations

import pytest_twisted
from waiting import signal_fired, until

from chatproto.certs import fingerprint, write_pair
from chatproto.tls import PIN, VERIFY, TLSSettings
from qtclient import session as states
from qtclient.host import HostedServer
from qtclient.views.connect_dialog import Target
from qtclient.views.main_window import SettingsPins


def tls_server(reactor, key, cert, port=0) -> HostedServer:
    hosted = HostedServer(reactor)
    hosted.start(f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    return hosted


@pytest_twisted.inlineCallbacks
def test_verified_tls_with_a_ca_file(window, reactor, tmp_path):
    key, cert, _ = write_pair(tmp_path / "a")
    server = tls_server(reactor, key, cert)
    try:
        welcomed = signal_fired(window.session.welcomed)
        window.connect_to(Target("localhost", server.port, "alice", TLSSettings(VERIFY, cert)))
        (welcome,) = yield welcomed
        assert welcome.nick == "alice"
        confirmed = signal_fired(window.session.sendConfirmed)
        window.submit("over tls")
        yield confirmed
    finally:
        yield window.session.disconnect()
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_certificate_from_another_ca_is_refused_and_not_retried(window, reactor, tmp_path):
    key, cert, _ = write_pair(tmp_path / "a")
    _, other, _ = write_pair(tmp_path / "b")
    server = tls_server(reactor, key, cert)
    try:
        refused = signal_fired(window.session.errorReceived, lambda code, message: code == "tls")
        window.connect_to(Target("localhost", server.port, "alice", TLSSettings(VERIFY, other)))
        _code, message = yield refused
        assert "certificate was not accepted" in message
        yield until(lambda: window.session.state == states.GIVEN_UP)
        assert "Not connected" in window.banner.text()
        assert server.hub.sessions == []
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_trust_on_first_use_then_a_changed_certificate_is_refused(window, reactor, tmp_path, settings):
    key, cert, cert_pem = write_pair(tmp_path / "a")
    server = tls_server(reactor, key, cert)
    port = server.port
    target = Target("127.0.0.1", port, "alice", TLSSettings(PIN))
    try:
        asked = signal_fired(window.session.certificateUnknown)
        window.connect_to(target)
        where, seen = yield asked
        assert (where, seen) == (f"127.0.0.1:{port}", fingerprint(cert_pem))
        assert seen in window.banner.text(), "the user sees the fingerprint"
        assert server.hub.sessions == [], "nothing is sent before the user decides"
        welcomed = signal_fired(window.session.welcomed)
        window.banner.linkActivated.emit("trust")
        yield welcomed
        assert SettingsPins(settings)[f"127.0.0.1:{port}"] == seen
        yield window.session.disconnect()
        yield server.stop()

        # The same address now presents another certificate.
        key2, cert2, _ = write_pair(tmp_path / "b")
        server = tls_server(reactor, key2, cert2, port)
        refused = signal_fired(window.session.errorReceived, lambda code, message: code == "tls")
        window.connect_to(target)
        _code, message = yield refused
        assert "CHANGED" in message
        assert server.hub.sessions == []
        yield until(lambda: window.session.state == states.GIVEN_UP)
    finally:
        yield window.session.disconnect()
        yield server.stop()

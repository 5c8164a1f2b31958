"""The server as people run it: twistd / twist in a subprocess."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.internet import defer, reactor
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from chatproto import codec
from scripts.spawn import ROOT, TWIST, TWISTD, ServerProcess, server_env, spawn_server
from tests.netclient import connect, connect_irc


def spawn(test: TestCase, runner: list[str], *args: str, **where) -> ServerProcess:
    """A server subprocess that is killed when the test ends, pass or fail."""
    return reaped(test, spawn_server(reactor, *args, runner=runner, **where))


def reaped(test: TestCase, process: ServerProcess) -> ServerProcess:
    """``process``, killed when ``test`` ends if it is still running."""

    def reap():
        if not process.ended.called:
            process.signal("KILL")
            return process.ended

    test.addCleanup(reap)
    return process


class Plugin(SynchronousTestCase):
    def test_chat_plugin_is_found(self):
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("chat", names)


class Processes(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_python_m_twisted_chat_help(self):
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "twisted", "chat", "--help"], env=server_env(), path=ROOT
        )
        self.assertEqual(code, 0, err)
        for option in (b"--listen", b"--history", b"--max-clients", b"--idle-timeout"):
            self.assertIn(option, out)

    @defer.inlineCallbacks
    def test_bad_option_is_one_line_not_a_traceback(self):
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "twisted", "chat", "--max-clients", "-3"], env=server_env(), path=ROOT
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"--max-clients must be greater than 0", out + err)
        self.assertNotIn(b"Traceback", out + err)

    @defer.inlineCallbacks
    def test_history_survives_sigkill(self):
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = spawn(self, TWIST, "--history", history)
        port = yield server.listening
        ann = yield connect(reactor, port, "ann")
        acked = []
        for i in range(30):
            ann.send(codec.Say(f"m{i}", f"r{i}"))
        while len(acked) < 30:
            packet = yield ann.expect(codec.MessagePacket)
            acked.append((packet.seq, packet.text))
        server.signal("KILL")
        self.assertEqual((yield server.ended), -signal.SIGKILL)
        yield ann.lost

        server = spawn(self, TWIST, "--history", history)
        port = yield server.listening
        bob = yield connect(reactor, port, None)
        bob.send(codec.Login("bob", 1))
        welcome = yield bob.expect(codec.Welcome)
        self.assertEqual([(m.seq, m.text) for m in welcome.history], acked)
        bob.send(codec.Say("after restart"))
        packet = yield bob.expect(codec.MessagePacket)
        self.assertEqual(packet.seq, 31, "seq continues, never reused")
        server.signal("TERM")
        yield server.ended
        yield bob.lost

    @defer.inlineCallbacks
    def test_a_guest_operators_invite_only_room_is_open_again_after_sigkill(self):
        """docs/protocol.md 14.2: rules no account operator can come back to
        enforce are not taken back by the next server."""
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = spawn(self, TWIST, "--history", history)
        port = yield server.listening
        gus = yield connect(reactor, port, "gus", 2)
        gus.send(codec.Join("den"))
        yield gus.expect(codec.RoomState)
        gus.send(codec.Moderate("den", "mode", invite_only=True, ref="m"))
        record = yield gus.expect(codec.MessagePacket)
        self.assertEqual(record.action, {"op": "mode", "invite_only": True})
        server.signal("KILL")
        yield server.ended
        yield gus.lost

        server = spawn(self, TWIST, "--history", history)
        port = yield server.listening
        bob = yield connect(reactor, port, "bob", 2)
        bob.send(codec.Join("den", "j"))
        state = yield bob.expect(codec.RoomState)
        self.assertEqual(
            (state.invite_only, [(p.nick, p.op) for p in state.members]), (False, [("bob", True)])
        )
        server.signal("TERM")
        yield server.ended
        yield bob.lost

    @defer.inlineCallbacks
    def test_sigterm_says_bye_and_exits_cleanly(self):
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = spawn(self, TWISTD, "--history", history)
        port = yield server.listening
        ann = yield connect(reactor, port, "ann")
        bob = yield connect(reactor, port, "bob")
        server.signal("TERM")
        for client in (ann, bob):
            bye = yield client.expect(codec.Bye)
            self.assertEqual(bye.reason, "server_shutdown")
            yield client.lost
        self.assertEqual((yield server.ended), 0)


class SignalsTwice(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_second_signal_while_shutting_down_changes_nothing(self):
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = spawn(self, TWISTD, "--history", history)
        port = yield server.listening
        ann = yield connect(reactor, port, "ann")
        server.signal("TERM")
        server.signal("INT")  # at once (another signal: two of one kind may be delivered as one)
        bye = yield ann.expect(codec.Bye)
        self.assertEqual(bye.reason, "server_shutdown")
        self.assertEqual((yield server.ended), 0)
        self.assertNotIn(b"Traceback", server.output)
        self.assertIn(b"already shutting down", server.output)


def _free_port(low: bool = False) -> tuple[socket.socket | None, int]:
    """A port on 127.0.0.1 free right now (below 1024 if ``low``)."""
    candidates = range(1023, 599, -1) if low else [0]
    for port in candidates:
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.close()
            continue
        port = probe.getsockname()[1]
        probe.close()
        return None, port
    raise SkipTest("no free port below 1024 on 127.0.0.1")


def _readable_by_others(path: str) -> bool:
    """Can an unprivileged user reach the code in ``path``? (twistd imports
    lazily after dropping privileges.)"""
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


class Binding(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_a_port_in_use_is_one_line_and_exit_1_under_both_runners(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        self.addCleanup(holder.close)
        taken = f"tcp:{holder.getsockname()[1]}:interface=127.0.0.1"
        for runner in (TWIST, TWISTD):
            server = spawn(self, runner, "--history", ":memory:", listen=taken)
            code = yield server.ended
            self.failureResultOf(server.listening, RuntimeError)
            self.assertEqual(code, 1)
            output = server.output.decode()
            self.assertIn(f"can't listen on {taken}", output)
            self.assertIn("Address already in use", output)
            self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_twistd_binds_a_low_port_then_drops_root(self):
        if os.geteuid() != 0:
            raise SkipTest("needs root: binds a port below 1024, then switches to nobody")
        if not _readable_by_others(ROOT):
            raise SkipTest(f"nobody can't read {ROOT}, which twistd needs after dropping root")
        nobody = pwd.getpwnam("nobody")
        _, port = _free_port(low=True)
        runner = [*TWISTD, f"--uid={nobody.pw_uid}", f"--gid={nobody.pw_gid}"]
        server = spawn(self, runner, "--history", ":memory:", listen=f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual((yield server.listening), port)
        ann = yield connect(reactor, port, "ann")
        with open(f"/proc/{server.transport.pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        self.assertEqual({int(uid) for uid in uids}, {nobody.pw_uid}, "root is dropped for good")
        ann.send(codec.Say("from a low port", "r"))
        self.assertEqual((yield ann.expect(codec.MessagePacket)).ref, "r")
        server.signal("TERM")
        self.assertEqual((yield server.ended), 0)


class JsonLogs(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_twistd_json_lines_carry_no_message_text(self):
        import json

        runner = [*TWISTD, "--logger=chatproto.logs.json_observer"]
        server = spawn(self, runner, "--history", ":memory:")
        port = yield server.listening
        ann = yield connect(reactor, port, "ann")
        ann.send(codec.Say("the secret plan 42", "s"))
        yield ann.expect(codec.MessagePacket)
        ann.send(codec.Say("bell\x07 in another secret", "b"))
        yield ann.expect(codec.Error)
        ann.send(codec.Quit("secret reason too"))
        yield ann.lost
        server.signal("TERM")
        code = yield server.ended
        self.assertEqual(code, 0)
        lines = server.output.decode("utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
        self.assertTrue(all({"time", "level", "namespace", "text"} <= set(r) for r in records))
        texts = [r["text"] for r in records]
        self.assertTrue(any("logged in: ann as " in text for text in texts), texts)
        self.assertNotIn("secret", server.output.decode("utf-8"), "message text is never logged")


#: What the server says about reaching it (chatproto.hints).
_DESKTOP = re.compile(r'desktop client: make client ARGS="--connect (\S+):(\d+) --nick NAME"')
_PAGE = re.compile(r"browser: open (http://(\S+):(\d+)/)")
_IRC = re.compile(r"IRC: irssi -c (\S+) -p (\d+)")
_FINGERPRINT = re.compile(r"TLS certificate SHA-256 fingerprint: ([0-9A-F:]{95})")


def said(*patterns: re.Pattern):
    """A readiness check: every pattern's first match in the output so far, or None."""

    def ready(output: bytes):
        text = output.decode("utf-8", "replace")
        found = [pattern.search(text) for pattern in patterns]
        return found if all(found) else None

    return ready


def start(test: TestCase, ready, *args: str, runner: list[str] = TWISTD) -> ServerProcess:
    """``chat`` with exactly ``args`` (no --listen of ours), killed when the test ends."""
    process = ServerProcess(ready)
    argv = [sys.executable, *runner, "chat", *args]
    reactor.spawnProcess(process, sys.executable, argv, env=server_env(), path=ROOT)
    return reaped(test, process)


def _busy(port: int, host: str = "127.0.0.1") -> bool:
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError:
        return True
    finally:
        probe.close()
    return False


def _need_free(host: str, *ports: int) -> None:
    busy = [port for port in ports if _busy(port, host)]
    if busy:
        raise SkipTest(f"the default ports {busy} are in use here (another server?)")


@defer.inlineCallbacks
def _get(url: str):
    from twisted.web.client import Agent, readBody

    response = yield Agent(reactor).request(b"GET", url.encode())
    body = yield readBody(response)
    return response.code, body


class Onboarding(TestCase):
    """What a newcomer gets from ``make run``: the three ways in, on
    loopback, and a line each saying how to use it."""

    timeout = 30

    @defer.inlineCallbacks
    def check_the_lines_lead_in(self, found) -> defer.Deferred:
        """Each printed line works: the desktop protocol, the page, IRC."""
        desktop, page, irc = found
        ann = yield connect(reactor, int(desktop.group(2)), "ann")
        self.assertEqual(desktop.group(1), "127.0.0.1")
        code, body = yield _get(page.group(1))
        self.assertEqual(code, 200)
        self.assertIn(b"<html", body.lower())
        self.assertEqual(irc.group(1), "127.0.0.1")
        bob = yield connect_irc(reactor, int(irc.group(2)), "bob")
        for client in (ann, bob):
            client.transport.loseConnection()
            yield client.lost

    @defer.inlineCallbacks
    def test_each_listener_gets_a_line_saying_how_to_reach_it(self):
        loopback = "tcp:0:interface=127.0.0.1"
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = start(
            self,
            said(_DESKTOP, _PAGE, _IRC),
            *("--listen", loopback, "--web", loopback, "--irc", loopback, "--history", history),
            runner=TWIST,
        )
        found = yield server.listening
        yield self.check_the_lines_lead_in(found)
        server.signal("TERM")
        self.assertEqual((yield server.ended), 0)

    @defer.inlineCallbacks
    def test_make_run_serves_all_three_on_loopback_by_default(self):
        if shutil.which("make") is None:
            raise SkipTest("no make")
        make = ["make", "-n", "--no-print-directory", "run", "ARGS="]  # as a newcomer types it
        run = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, check=True)
        endless = re.compile(r"twistd -n --pidfile= chat\s*$", re.M)
        self.assertRegex(run.stdout, endless, "make run adds no endpoints of its own")
        _need_free("127.0.0.1", 7777, 8080, 6667)
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = start(self, said(_DESKTOP, _PAGE, _IRC), "--history", history)
        found = yield server.listening
        self.assertEqual(
            [(m.group(1), m.group(2)) for m in (found[0], found[2])],
            [("127.0.0.1", "7777"), ("127.0.0.1", "6667")],
        )
        self.assertEqual(found[1].group(1), "http://127.0.0.1:8080/")
        output = server.output.decode()
        for port in (7777, 8080, 6667):
            self.assertIn(f"(127.0.0.1:{port})", output, "bound to loopback only")
        yield self.check_the_lines_lead_in(found)
        server.signal("TERM")
        self.assertEqual((yield server.ended), 0)

    @defer.inlineCallbacks
    def test_public_is_tls_everywhere_with_the_fingerprint_it_prints(self):
        from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS

        from chatproto.tls import PinningCreator, fingerprint_of
        from tests.test_tls import Handshaking

        _need_free("0.0.0.0", 7777, 8443, 6697)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        history = os.path.join(folder, "chat.sqlite3")
        server = start(self, said(_FINGERPRINT, re.compile(r"IRC: .*6697")), "--public", "--history", history)
        found = yield server.listening
        printed = found[0].group(1)
        output = server.output.decode()
        for port in (7777, 8443, 6697):
            self.assertIn(f"(0.0.0.0:{port})", output, "every interface")
        self.assertIn(f"-tls_pinned_cert {printed}", output)
        self.assertRegex(output, r"browser: open https://\S+:8443/")
        for port in (7777, 8443, 6697):
            endpoint = HostnameEndpoint(reactor, "127.0.0.1", port)
            client = yield connectProtocol(
                wrapClientTLS(PinningCreator("localhost"), endpoint), Handshaking()
            )
            certificate = yield client.handshake
            self.assertEqual(fingerprint_of(certificate), printed, f"port {port} serves what was printed")
            client.transport.loseConnection()
            yield client.lost
        self.assertTrue(os.path.exists(os.path.join(folder, "cert.pem")))
        server.signal("TERM")
        self.assertEqual((yield server.ended), 0)

"""The session machine's side of section 19, with fake server packets on a
task.Clock: what it sends for each action, typing's pace and expiry, away,
/msg to an account or a guest, and the rev catch-up after a reconnect."""

from __future__ import annotations

from chatproto import codec
from tests.test_client_session import Harness, message, msg, room, welcome


def logged_in(rooms=("general",), limits=None, account=False):
    h = Harness()
    protocol, transport = h.accept()
    w = welcome()
    limits = {"max_text": 4000, **(limits or {})}
    w = codec.Welcome(w.nick, w.id, w.resume, w.server, w.motd, [], [], [], limits, [], "general", account)
    h.serve(protocol, w)
    for name in rooms:
        h.serve(protocol, room(name))
    h.sent(transport)
    return h, protocol, transport


def test_each_action_sends_its_packet():
    h, protocol, transport = logged_in()
    s = h.session
    ref = s.say("agreed", "general", reply=7)
    assert s.edit("general", 8, "fixed")
    assert s.delete("general", 9)
    assert s.react("general", 8, "🎉")
    assert s.react("general", 8, "🎉", on=False)
    assert s.set_away("lunch")
    assert s.set_back()
    sent = h.sent(transport)
    assert sent == [
        codec.Say("agreed", ref, "general", 7),
        codec.Edit("general", 8, "fixed", "edit:8"),
        codec.Delete("general", 9, "delete:9"),
        codec.React("general", 8, "🎉", None, "react:8"),
        codec.React("general", 8, "🎉", False, "react:8"),
        codec.Away(True, "lunch", "away"),
        codec.Away(False, None, "back"),
    ]
    h.serve(protocol, codec.Done("away", "ann", "away"))
    assert s.away == "lunch"
    h.serve(protocol, codec.Done("back", "ann", "back"))
    assert s.away is None


def test_typing_goes_at_most_once_an_interval_and_stops_only_after_a_start():
    h, _protocol, transport = logged_in(limits={"typing_interval": 3})
    s = h.session
    assert not s.typing("general", False), "no stop without a start"
    assert s.typing("general")
    assert not s.typing("general"), "again within the interval: nothing"
    h.clock.advance(3)
    assert s.typing("general")
    assert s.typing("general", False)
    assert h.sent(transport) == [
        codec.Typing("general"),
        codec.Typing("general"),
        codec.Typing("general", False),
    ]
    s.typing("general")
    s.say("done typing")
    assert not s.typing("general", False), "sending a message said it stopped"


def test_typing_notices_show_until_stopped_a_message_or_twice_the_interval():
    h, protocol, _transport = logged_in(limits={"typing_interval": 2})

    def last():
        return h.events.named("typing_changed")[-1]

    h.serve(protocol, codec.TypingNotice("general", "bob", True))
    h.serve(protocol, codec.TypingNotice("general", "ann", True))  # our own other device: ignored
    assert last() == ("general", ["bob"])
    h.clock.advance(3.9)
    assert h.session.typers.nicks("general") == ["bob"]
    h.clock.advance(0.2)
    assert last() == ("general", []), "expired after 2 × typing_interval"
    h.serve(protocol, codec.TypingNotice("general", "bob", True))
    h.serve(protocol, codec.TypingNotice("general", "carol", True))
    h.serve(protocol, msg(1, "hi", "bob"))
    assert last() == ("general", ["carol"]), "a message from bob ends his notice"
    h.serve(protocol, codec.TypingNotice("general", "carol", False))
    assert last() == ("general", [])
    h.clock.advance(10)  # no stale timer fires afterwards
    assert last() == ("general", [])


def test_changed_and_status_are_reported():
    h, protocol, _transport = logged_in()
    changed = codec.Message(3, 3.0, "bob", "fixed", edited=5.0, rev=1)
    h.serve(protocol, codec.Changed("general", "edit", "bob", changed))
    h.serve(protocol, codec.Status("general", "bob", "lunch"))
    assert h.events.named("message_changed") == [("general", changed, "edit", "bob")]
    assert h.events.named("status_changed") == [(codec.Status("general", "bob", "lunch"),)]
    assert h.session.rooms["general"].rev == 1


def test_msg_to_an_account_opens_the_conversation_then_says_it_there():
    h, protocol, transport = logged_in(account=True)
    s = h.session
    ref = s.message_to("bob", "hello")
    assert h.sent(transport) == [codec.Open(["bob"], ref)]
    direct = codec.RoomState("@ann+bob", "", [], [], ref, kind="direct", rev=0)
    h.serve(protocol, direct)
    (say,) = h.sent(transport)
    assert (say.room, say.text) == ("@ann+bob", "hello")
    assert s.direct_room(["bob"]) == "@ann+bob"
    s.message_to("BOB", "again")
    (say,) = h.sent(transport)
    assert (say.room, say.text) == ("@ann+bob", "again"), "the open conversation is reused"


def test_msg_to_a_guest_falls_back_to_a_whisper():
    h, protocol, transport = logged_in(account=True)
    ref = h.session.message_to("zed", "psst")
    h.sent(transport)
    h.serve(protocol, codec.Error("no_such_account", "no account zed", ref))
    (whisper,) = h.sent(transport)
    assert (whisper.to, whisper.text) == ("zed", "psst")
    assert not h.events.named("error_received")


def test_msg_as_a_guest_whispers():
    h, _protocol, transport = logged_in(account=False)
    h.session.message_to("bob", "psst")
    (whisper,) = h.sent(transport)
    assert isinstance(whisper, codec.Whisper)


def test_a_reconnect_fetches_the_changes_missed_by_rev_pages():
    h = Harness()
    protocol, transport = h.accept()
    h.serve(protocol, welcome())
    first = codec.RoomState("general", "", [], [message(1), message(2)], rev=3)
    h.serve(protocol, first)
    h.sent(transport)
    assert h.session.rooms["general"].rev == 3, "the first ROOM is where we start"
    h.drop(protocol)
    h.clock.advance(1.0)
    protocol, transport = h.accept()
    h.serve(protocol, welcome())
    h.sent(transport)
    again = codec.RoomState("general", "", [], [message(1), message(2)], rev=9)
    h.serve(protocol, again)
    asked = [p for p in h.sent(transport) if isinstance(p, codec.HistoryRequest)]
    assert asked == [codec.HistoryRequest(limit=200, room="general", changed_after=3)]
    edited = codec.Message(1, 1.0, "bob", "new", edited=9.0, rev=5)
    deleted = codec.Message(2, 2.0, "bob", "", deleted=True, deleted_by="carol", rev=6)
    h.serve(protocol, codec.HistoryPage([edited, deleted], True, "general", rev=9))
    asked = [p for p in h.sent(transport) if isinstance(p, codec.HistoryRequest)]
    assert asked == [codec.HistoryRequest(limit=200, room="general", changed_after=6)]
    reacted = codec.Message(1, 1.0, "bob", "new", reactions=[codec.Reaction("👍", ["carol"])], rev=9)
    h.serve(protocol, codec.HistoryPage([reacted], False, "general", rev=9))
    assert h.sent(transport) == []
    assert [args[1] for args in h.events.named("message_changed")] == [edited, deleted, reacted]
    assert h.session.rooms["general"].rev == 9
    h.serve(protocol, codec.HistoryPage([message(3)], False, "general"))  # an ordinary page after
    assert len(h.events.named("message_changed")) == 3

"""One model per conversation: whether a turn keeps the conversation's model or switches.

Pure decisions (``follow``, ``fold``) over ``Topic``s (a category and its confidence), and
two small stores around them:

- ``TurnMemory``: the conversation's topic after its first k user turns, by sha256 of those
  turns' text (a bounded LRU). Every chat request carries its history, so nothing needs to be
  stored to route it (stateless); the memory only spares decoding the old turns again.
- ``SessionStore`` (``MemorySessions`` here, per replica): the topic of a conversation named
  by a session key (a header, or the body's ``user``), for clients that send only the last
  turn. Another store (shared between replicas) implements the same two methods.

Agent tool loops: a request that ends with tool results (role ``tool``, or the legacy
``function``) carries no new question. The model that issued the tool calls is not named in
the request, so the loop goes on with the conversation's topic after its last user turn, which
is what the request that issued the calls was routed on (remembered, or decided again from
the same turns); with only tool results and a session key, the session's topic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from router_svc.config.loading import Config
from router_svc.core.messages import ChatRequest
from router_svc.core.selection import Decision, Reason, select_model
from router_svc.core.texts import JOINED, Path

Verdict = Literal["new", "kept", "switched"]
Source = Literal["history", "session"]
TOOL_ROLES = frozenset({"tool", "function"})
# The decision's own reasons that only say how a topic maps to a model: a turn decided by its
# conversation says so instead. PII and outage reasons always stand.
_ROUTING_REASONS = frozenset({"category", "low_confidence"})


@dataclass(frozen=True)
class Topic:
    category: str
    confidence: float


@dataclass(frozen=True)
class SwitchPolicy:
    """``category_threshold``: ``classifier.category_model.threshold``; a topic below it has no
    category of its own (``default_model`` serves it). ``switch_confidence``: what a turn of
    another category needs to take the conversation over; a turn below the category
    threshold never does (it would only switch to ``default_model``)."""

    category_threshold: float
    switch_confidence: float

    @property
    def bar(self) -> float:
        return max(self.switch_confidence, self.category_threshold)

    def settled(self, t: Topic) -> str | None:
        return t.category if t.confidence >= self.category_threshold else None


def follow(conv: Topic | None, turn: Topic | None,
           policy: SwitchPolicy) -> tuple[Topic | None, Verdict]:
    """The conversation's topic after one more user turn, and whether the turn kept it.

    A first turn decides (``new``). Later, a turn switches only when it is confidently
    (``policy.bar``) about another category than the conversation's; anything else (a
    follow-up, thanks, a question of the same category, no text) keeps the conversation's
    topic as it was.
    """
    if conv is None:
        return turn, "new"
    if turn is None:
        return conv, "kept"
    if turn.confidence >= policy.bar and policy.settled(turn) != policy.settled(conv):
        return turn, "switched"
    return conv, "kept"


def fold(start: Topic | None, turns: Iterable[Topic | None],
         policy: SwitchPolicy) -> Topic | None:
    for t in turns:
        start, _ = follow(start, t, policy)
    return start


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Shape:
    """The conversation in one chat request: the texts of its user turns (``earlier``: before
    the last user message; ``last``: that message's text, "" if it has none) and whether it
    ends with tool results."""

    earlier: tuple[str, ...]
    last: str
    tool_loop: bool


def shape_of(req: ChatRequest, text_at: Mapping[Path, str]) -> Shape:
    """``text_at``: each segment's text as the classifier reads it (folded), by path. A turn's
    text is what ``messages.category_segments`` takes from the last one: its content."""
    messages = req.body["messages"]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    parts: dict[int, list[str]] = {i: [] for i in users}
    for s in req.segments:
        if s.path[:1] == ("messages",) and s.path[2:3] == ("content",) \
                and s.path[-1] != JOINED and s.path[1] in parts:
            parts[s.path[1]].append(text_at[s.path])  # type: ignore[index]
    texts = ["\n".join(parts[i]) for i in users]
    earlier = tuple(t for t in texts[:-1] if t)
    tool_loop = bool(messages) and messages[-1].get("role") in TOOL_ROLES
    return Shape(earlier, texts[-1] if texts else "", tool_loop)


def prefix_keys(turns: Sequence[str]) -> list[bytes]:
    """``keys[k]``: sha256 of the first k+1 turns (each length-prefixed: no two lists of
    turns share a key by where one turn ends and the next begins)."""
    h = hashlib.sha256(b"router-svc conversation v1")
    out = []
    for t in turns:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        out.append(h.copy().digest())
    return out


class TurnMemory:
    """Conversation topics by the digest of the turns that led to them; least recently used
    go first beyond ``capacity``. Holds digests and categories, never text."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._topics: OrderedDict[bytes, Topic] = OrderedDict()

    def __len__(self) -> int:
        return len(self._topics)

    def get(self, key: bytes) -> Topic | None:
        t = self._topics.get(key)
        if t is not None:
            self._topics.move_to_end(key)
        return t

    def longest(self, keys: Sequence[bytes]) -> tuple[int, Topic | None]:
        """The most turns (``k``) whose topic is remembered, and that topic (0, None: none)."""
        for k in range(len(keys), 0, -1):
            t = self.get(keys[k - 1])
            if t is not None:
                return k, t
        return 0, None

    def put(self, key: bytes, topic: Topic) -> None:
        self._topics[key] = topic
        self._topics.move_to_end(key)
        while len(self._topics) > self.capacity:
            self._topics.popitem(last=False)


class SessionStore(Protocol):
    """Where a session's topic lives. Keys are digests of the session key, never the key."""

    async def get(self, key: str) -> Topic | None: ...

    async def put(self, key: str, topic: Topic) -> None: ...


class MemorySessions:
    """Session topics in this process: at most ``capacity`` (least recently used go first),
    each for ``ttl_s`` after it was last used."""

    def __init__(self, capacity: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.ttl_s, self.clock = capacity, ttl_s, clock
        self._items: OrderedDict[str, tuple[float, Topic]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> Topic | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self.clock():
            del self._items[key]
            return None
        return item[1]

    async def put(self, key: str, topic: Topic) -> None:
        self._items[key] = (self.clock() + self.ttl_s, topic)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


def session_key(config: Config, headers: Mapping[str, str] | None,
                body: Mapping[str, Any]) -> str | None:
    """The session this request belongs to (a digest), from ``session_header`` if configured
    and sent, else the body's ``user`` if ``session_from_user``; None: no session."""
    c = config.routing.conversation
    value = None
    if c.session_header and headers:
        value = _header(headers, c.session_header)
        kind = "header"
    if not value and c.session_from_user and isinstance(body.get("user"), str):
        value, kind = body["user"], "user"
    if not value:
        return None
    digest = hashlib.sha256(f"{kind}\0{value}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:  # a plain dict (ext_proc hands lower-case names)
        low = name.lower()
        v = next((val for k, val in headers.items() if k.lower() == low), None)
    return v.strip() if isinstance(v, str) else None


# --------------------------------------------------------------------------- one turn


@dataclass(frozen=True)
class Turn:
    """The conversation's part in one request's decision."""

    verdict: Verdict
    topic: Topic | None  # what the request is routed on (None: nothing to route on)
    previous: Topic | None = None  # the conversation's topic before this turn
    source: Source | None = None  # where ``previous`` came from
    tool_loop: bool = False

    @property
    def reason(self) -> Reason | None:
        if self.verdict == "switched":
            return "topic_switch"
        if self.verdict == "kept":
            return "tool_loop" if self.tool_loop else "conversation"
        return None

    def relabel(self, d: Decision) -> Decision:
        """The decision with the conversation's reason where it only said "category" or
        "low_confidence"; a PII reason (the model changed for the policy) stands."""
        reason = self.reason
        if reason is None or d.reason not in _ROUTING_REASONS:
            return d
        return dataclasses.replace(d, reason=reason)

    def headers(self, config: Config, allowed: frozenset[str] | None = None) -> dict[str, str]:
        h = {"x-router-conversation": self.verdict}
        if self.previous is not None and self.verdict != "new":
            h["x-router-conversation-from"] = self.source or "history"
            prev = select_model(config, config.routing.alias, self.previous.category,
                                self.previous.confidence, (), allowed)
            h["x-router-conversation-model"] = prev.model
        return h


@dataclass
class Pending:
    """What is known before the classifier call: the remembered part of the conversation and
    the earlier turns still to be classified (``context``, sent in the same model call)."""

    shape: Shape
    keys: list[bytes]  # prefix keys of earlier + last
    covered: int  # earlier turns whose topic ``start`` is
    start: Topic | None
    context: list[str]
    session: str | None
    pinned: Topic | None = None  # the session's topic, used when there is no history
    remembered_last: Topic | None = None  # tool loop: the topic after the last turn, known


class Conversations:
    """The conversation side of routing for one ``Router``: its memory, its sessions."""

    def __init__(self, config: Config, sessions: SessionStore | None = None) -> None:
        c = config.routing.conversation
        self.config = config
        self.enabled = c.enabled
        self.policy = SwitchPolicy(config.classifier.category_model.threshold,
                                   c.switch_confidence)
        self.memory = TurnMemory(c.memory_entries)
        if sessions is None and (c.session_header or c.session_from_user):
            sessions = MemorySessions(c.max_sessions, c.session_ttl_s)
        self.sessions = sessions

    async def begin(self, req: ChatRequest, text_at: Mapping[Path, str],
                    headers: Mapping[str, str] | None = None) -> Pending | None:
        """None: this request is not routed by conversation (turned off)."""
        if not self.enabled:
            return None
        shape = shape_of(req, text_at)
        turns = [*shape.earlier, shape.last] if shape.last else list(shape.earlier)
        keys = prefix_keys(turns)
        n = len(shape.earlier)
        covered, start = self.memory.longest(keys[:n])
        pending = Pending(shape, keys, covered, start, list(shape.earlier[covered:]),
                          None)
        if self.sessions is not None:
            pending.session = session_key(self.config, headers, req.body)
            if pending.session is not None and not shape.earlier:
                pending.pinned = await self.sessions.get(pending.session)
        if shape.tool_loop and shape.last and pending.pinned is None:
            pending.remembered_last = self.memory.get(keys[n])
            if pending.remembered_last is not None:
                pending.context = []
        return pending

    async def decide(self, p: Pending, turn: Topic | None,
                     context: Sequence[Topic]) -> Turn:
        """``turn``: the last user turn's topic (None: it has no text); ``context``: one topic
        per ``p.context`` text, in order."""
        if p.shape.tool_loop and p.pinned is not None:
            # The session's topic is the one its last request, which issued the calls, had.
            return await self._done(p, Turn("kept", p.pinned, p.pinned, "session",
                                            tool_loop=True))
        if p.remembered_last is not None:  # a tool loop whose calls were routed here before
            return await self._done(p, Turn("kept", p.remembered_last, p.remembered_last,
                                             "history", tool_loop=True))
        conv = p.start
        for k, t in enumerate(context, start=p.covered):
            conv, _ = follow(conv, t, self.policy)
            if conv is not None:
                self.memory.put(p.keys[k], conv)
        source: Source | None = "history" if conv is not None else None
        if conv is None and p.pinned is not None:
            conv, source = p.pinned, "session"
        after, verdict = follow(conv, turn, self.policy)
        # The memory holds what the request's own turns decide, whatever a session said.
        pure = turn if source == "session" else after
        if p.shape.last and pure is not None:
            self.memory.put(p.keys[len(p.shape.earlier)], pure)
        if p.shape.tool_loop and after is not None:
            # The loop goes on with the model that issued the calls: the one this topic,
            # after the last user turn, was routed to.
            return await self._done(p, Turn("kept", after, after, source or "history",
                                            tool_loop=True))
        return await self._done(p, Turn(verdict, after, conv, source))

    async def _done(self, p: Pending, turn: Turn) -> Turn:
        if p.session is not None and self.sessions is not None and turn.topic is not None:
            await self.sessions.put(p.session, turn.topic)
        return turn

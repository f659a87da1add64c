"""Request in, routing decision out: the one path both front doors (HTTP proxy, ext_proc) use.

No HTTP here: the caller hands over the parsed JSON body and gets a ``Routed`` back (or a
``RouterError`` to render). Failure policy for a classifier outage lives here, in one place.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from router_svc.classify.batcher import DeadlineExceeded, QueueFull
from router_svc.classify.classifier import Classification, Classifier, TooMuchText
from router_svc.classify.pii import PiiEntity, redact
from router_svc.config.loading import Config
from router_svc.core.auth import Caller, check_model
from router_svc.core.conversation import Conversations, Pending, SessionStore, Topic, Turn
from router_svc.core.endpoints import Kind
from router_svc.core.errors import (
    BadRequest,
    Overloaded,
    PayloadTooLarge,
    ServiceUnavailable,
    UnknownModel,
    UnscannableContent,
)
from router_svc.core.mask import Mask, Numbering, taken_placeholders
from router_svc.core.messages import (
    ChatRequest,
    CompletionRequest,
    apply_redactions,
    category_segments,
    parse_chat_request,
    parse_completion_request,
)
from router_svc.core.metrics import Metrics
from router_svc.core.normalize import Folded, fold
from router_svc.core.selection import BackendTarget, Decision, pii_rejection_response, select_model
from router_svc.core.texts import JOINED, Path, Segment, split_joined
from router_svc.tracing.spans import span

log = logging.getLogger(__name__)

# partial: some content (an image, audio, a file) could not be read
PiiStatus = Literal["checked", "partial", "skipped", "unchecked"]


@dataclass
class Routed:
    """What the front door needs to answer one request."""

    kind: Kind
    request: ChatRequest | CompletionRequest
    decision: Decision
    body: dict[str, Any]  # the body to send upstream: model rewritten, PII redacted if asked
    target: BackendTarget | None  # None when the answer is a rejection
    rejection: dict[str, Any] | None = None
    classification: Classification | None = None
    pii_status: PiiStatus = "checked"
    category_text: str = ""
    classify_seconds: float = 0.0
    entities: list[tuple[int, PiiEntity]] = field(default_factory=list)  # (segment, entity)
    # pii_action mask: the placeholders sent upstream and the values they stand for, put back
    # into the answer. This request's only: never logged (no repr), stored or forwarded.
    mask: Mask | None = field(default=None, repr=False)
    # One model per conversation (core.conversation): this turn's part, and its headers.
    conversation: Turn | None = None
    conversation_headers: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return self.request.stream

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.classification is None else self.classification.embedding

    def headers(self) -> dict[str, str]:
        d = self.decision
        h = {
            "x-router-model": d.model,
            "x-router-category": d.category or "none",
            "x-router-confidence": f"{d.confidence:.3f}",
            "x-router-reason": d.reason,
            "x-router-pii": ",".join(sorted(d.pii_types)) or "none",
        }
        if self.pii_status != "checked":
            h["x-router-pii-check"] = self.pii_status
        if d.action != "route":
            h["x-router-pii-action"] = d.action
        h.update(self.conversation_headers)
        return h


class ClassifierDown(Exception):
    """The classifier could not answer (Triton down, timeout)."""


class ClassifierUnavailable(ServiceUnavailable):
    """503 under a fail-closed ``on_error`` policy; the header tells clients the PII check
    could not run (``x-router-pii-check: unavailable``), as ``unchecked`` does when it allows."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"x-router-pii-check": "unavailable"}


class Router:
    def __init__(self, config: Config, classifier: Classifier | None, metrics: Metrics,
                 environ: dict[str, str] | None = None, sessions: SessionStore | None = None):
        self.config = config
        self.classifier = classifier
        self.metrics = metrics
        self._env = os.environ if environ is None else environ
        self._down_logged = float("-inf")  # when a classifier failure was last logged
        # ``sessions``: where session pins live (default: in this process, when configured).
        self.conversations = Conversations(config, sessions)

    # ---- the pieces, each small
    def parse(self, kind: Kind, body: Any) -> ChatRequest | CompletionRequest:
        limits = self.config.limits
        messages = body.get("messages") if isinstance(body, dict) else None
        if isinstance(messages, list) and len(messages) > limits.max_messages:
            raise BadRequest(f"'messages' holds {len(messages)} messages; this router reads at "
                             f"most {limits.max_messages} (limits.max_messages).",
                             param="messages", code="too_many_messages")
        req = parse_chat_request(body) if kind == "chat" else parse_completion_request(body)
        if req.model != self.config.routing.alias and req.model not in self.config.model_config:
            raise UnknownModel(
                f"The model '{req.model}' does not exist; use '{self.config.routing.alias}' for "
                f"routing or one of: {', '.join(self.config.model_config)}"
            )
        if len(req.segments) > limits.max_texts:
            raise PayloadTooLarge(f"The request carries {len(req.segments)} separate texts; "
                                  f"this router reads at most {limits.max_texts} "
                                  "(limits.max_texts).", code="too_many_texts")
        chars = sum(len(s.text) for s in req.segments)
        if chars > limits.max_scan_tokens * MAX_CHARS_PER_TOKEN:
            raise too_much_text(f"{chars} characters", limits.max_scan_tokens)
        return req

    def needs_classification(self, req: ChatRequest | CompletionRequest) -> bool:
        """An explicit model that allows every PII type needs no model call at all."""
        if req.model == self.config.routing.alias:
            return True
        return not self.config.model_config[req.model].pii_policy.allow_by_default

    async def classify(self, category_text: str, segments: list[str],
                       context: Sequence[str] = ()) -> Classification:
        """``context``: more texts to categorise in the same call (a conversation's earlier
        turns not remembered), answered in ``Classification.context``."""
        if self.classifier is None:
            raise ClassifierDown("no classifier configured")
        t = time.perf_counter()
        try:
            # The classifier bounds the inference by triton.timeout_s per Triton call the
            # request needs (plus one for the queue): a long prompt gets the time its size
            # needs, a stalled model still fails. The gRPC deadline bounds each call, and the
            # batcher drops rows still unsent at the deadline instead of running them.
            extra = {"context_texts": list(context)} if context else {}
            with span("classify"):
                return await self.classifier.classify(
                    category_text, segments, max_tokens=self.config.limits.max_scan_tokens,
                    call_timeout_s=self.config.triton.timeout_s, **extra)
        except TooMuchText as e:
            raise too_much_text(f"{e.tokens} tokens", e.limit) from None
        except QueueFull as e:
            raise Overloaded(str(e), retry_after_s=1.0) from e
        except (TimeoutError, DeadlineExceeded) as e:
            self.metrics.count_classifier_failure("timeout")
            raise ClassifierDown("classification timed out") from e
        except Exception as e:  # Triton unavailable or erroring: the failure policy decides
            self.metrics.count_classifier_failure("triton")
            raise ClassifierDown(f"classifier unavailable: {type(e).__name__}") from e
        finally:
            self.metrics.classification_seconds.observe(time.perf_counter() - t)

    def target_for(self, model: str) -> BackendTarget:
        b = self.config.model_config[model].backend
        key = self._env.get(b.api_key_env) if b.api_key_env else None
        return BackendTarget(base_url=b.base_url, model=b.model, api_key=key or None,
                             forward_client_auth=b.forward_client_auth)

    # ---- the whole decision
    async def route(self, kind: Kind, body: Any, *, count_routing: bool = True,
                    allowed: frozenset[str] | None = None,
                    headers: Mapping[str, str] | None = None) -> Routed:
        """The decision for one request. ``count_routing=False`` leaves the routing metric
        to the caller (``count_decision``), e.g. to count a cache hit as ``cache_hit``.
        ``allowed``: the models the caller's key may use (None: all). ``headers``: the
        request's, for a session key (``routing.conversation.session_header``)."""
        with span("parse") as sp:  # the request read: messages, texts, limits, folding
            req = self.parse(kind, body)
            if allowed is not None:  # before any Triton work
                check_model(Caller(None, allowed), req.model, self.config.routing.alias)
            _check_encodable(req)
            # The model reads look-alike characters as what they look like (core.normalize);
            # entities are mapped back to the characters the client sent.
            folded = [fold(s.text) for s in req.segments]
            segments = [f.text for f in folded]
            by_path = {s.path: f.text for s, f in zip(req.segments, folded, strict=True)}
            category_text = "\n".join(by_path[s.path] for s in category_segments(req))
            if sp is not None:
                sp.set_attributes({"router.texts": len(segments),
                                   "router.chars": sum(map(len, segments))})
        pending = await self._conversation(req, by_path, headers)
        cls: Classification | None = None
        pii_status: PiiStatus = "partial" if req.unscannable else "checked"
        t = time.perf_counter()
        if self.needs_classification(req) and (segments or category_text):
            try:
                cls = unfold(await self.classify(category_text, segments,
                                                 pending.context if pending else ()), folded)
            except ClassifierDown as e:
                pii_status = self._on_classifier_down(req, e)
        elif not self.needs_classification(req):
            pii_status = "skipped"
        seconds = time.perf_counter() - t

        pii_types = cls.pii_types if cls else set()
        category = cls.category if cls else None
        confidence = cls.confidence if cls else 0.0
        if cls is None and req.model == self.config.routing.alias and not segments:
            category = None  # nothing to classify: default model
        turn = None
        if pending is not None and cls is not None and len(cls.context) == len(pending.context):
            turn = await self.conversations.decide(
                pending, Topic(cls.category, cls.confidence) if category_text else None,
                [Topic(c, p) for c, p in cls.context])
            if turn.topic is not None:  # routed on the conversation's topic
                category, confidence = turn.topic.category, turn.topic.confidence
        decision = select_model(self.config, req.model, category, confidence, pii_types,
                                allowed)
        if turn is not None:
            decision = turn.relabel(decision)
        self._check_unscannable(req, decision)
        entities = [(i, e) for i, seg in enumerate(cls.pii if cls else []) for e in seg]
        self._count(decision, entities, req.segments)
        if count_routing:
            self.count_decision(decision)

        routed = Routed(kind=kind, request=req, decision=decision, body={}, target=None,
                        classification=cls, pii_status=pii_status, category_text=category_text,
                        classify_seconds=seconds, entities=entities, conversation=turn,
                        conversation_headers=turn.headers(self.config, allowed) if turn else {})
        if decision.action == "reject":
            routed.rejection = pii_rejection_response(decision, int(time.time()))
            return routed
        if decision.action in ("redact", "mask"):  # rewrites nested content: a deep copy
            numbering = Numbering(taken_placeholders(s.text for s in req.segments)) \
                if decision.action == "mask" else None
            out = self._redacted(req, copy.deepcopy(dict(req.body)), entities,
                                 decision.denied_pii_types, numbering)
            routed.mask = numbering.result() if numbering is not None else None
        else:  # only the top-level "model" changes
            out = dict(req.body)
        out["model"] = self.config.model_config[decision.model].backend.model
        routed.body = out
        routed.target = self.target_for(decision.model)
        return routed

    async def _conversation(self, req: ChatRequest | CompletionRequest,
                            text_at: Mapping[Path, str],
                            headers: Mapping[str, str] | None) -> Pending | None:
        """The conversation a routed chat request continues (None: not routed by it)."""
        if not isinstance(req, ChatRequest) or req.model != self.config.routing.alias:
            return None
        return await self.conversations.begin(req, text_at, headers)

    def _check_unscannable(self, req: ChatRequest | CompletionRequest, d: Decision) -> None:
        """Content the PII check cannot read, for a model that may see no PII at all, is
        refused when ``classifier.pii_model.unscannable`` says so."""
        if not req.unscannable or self.config.classifier.pii_model.unscannable != "reject":
            return
        policy = self.config.model_config[d.model].pii_policy
        if policy.allow_by_default or policy.pii_types_allowed:
            return
        raise UnscannableContent(
            f"The PII check cannot read {', '.join(req.unscannable)}, and model '{d.model}' "
            "may see no PII (classifier.pii_model.unscannable: reject). Send text only, or "
            "name a model whose pii_policy allows it.", param=req.unscannable[0].split(" ")[0])

    def _on_classifier_down(self, req: ChatRequest | CompletionRequest,
                            err: ClassifierDown) -> PiiStatus:
        on = self.config.classifier.on_error
        # Said in the log (at most every 10 s), not only in /metrics: an operator reading the
        # log of a router answering 503s must see why.
        now = time.monotonic()
        if now - self._down_logged >= 10.0:
            self._down_logged = now
            log.warning("classification failed (%s); classifier.on_error decides the answer", err)
        if on.pii == "block":
            raise ClassifierUnavailable(
                f"The PII check could not run ({err}) and this router fails closed "
                "(classifier.on_error.pii: block); retry shortly."
            ) from err
        if req.model == self.config.routing.alias and on.routing == "fail_closed":
            raise ClassifierUnavailable(
                "Routing is unavailable and this router fails closed "
                "(classifier.on_error.routing: fail_closed); retry shortly."
            ) from err
        return "unchecked"

    @staticmethod
    def _redacted(req: ChatRequest | CompletionRequest, body: dict[str, Any],
                  entities: list[tuple[int, PiiEntity]], denied: frozenset[str],
                  numbering: Numbering | None = None) -> dict:
        """``body`` with the denied entities replaced: by ``<TYPE>``, or with ``numbering``
        (``pii_action: mask``) by numbered placeholders, named in body order."""
        by_path: dict[Path, list[PiiEntity]] = {}
        texts = {seg.path: seg.text for seg in req.segments}
        for i, e in entities:
            if e.type not in denied:
                continue
            seg = req.segments[i]
            if seg.path[-1] == JOINED:  # a value split across parts: redact each piece
                for path, a, b in split_joined(seg, e.start, e.end):
                    piece = PiiEntity(e.type, a, b, texts[path][a:b], e.score)
                    by_path.setdefault(path, []).append(piece)
            else:
                by_path.setdefault(seg.path, []).append(e)
        if numbering is None:
            replacements = {path: redact(texts[path], mine) for path, mine in by_path.items()}
        else:
            order = {seg.path: k for k, seg in enumerate(req.segments)}
            replacements = {path: numbering.mask(texts[path], by_path[path])
                            for path in sorted(by_path, key=lambda p: order.get(p, len(order)))}
        return apply_redactions(body, replacements) if replacements else body

    def count_decision(self, d: Decision, reason: str | None = None) -> None:
        """The routing metric for one decision (``reason`` overrides the decision's)."""
        self.metrics.count_routing(d.category or "none", d.model, reason or d.reason)

    def _count(self, d: Decision, entities: list[tuple[int, PiiEntity]],
               segments: tuple[Segment, ...] = ()) -> None:
        for i, e in entities:
            seg = segments[i] if segments else None
            if seg is not None and seg.path[-1] == JOINED \
                    and len(split_joined(seg, e.start, e.end)) < 2:
                continue  # found in its own part too: counted there
            action = d.action if e.type in d.denied_pii_types else "allow"
            self.metrics.count_pii(e.type, action)


# No text a tokenizer reads has more characters per token than this on average, so a text
# this many times longer than the token limit is refused without tokenising it.
MAX_CHARS_PER_TOKEN = 8


def too_much_text(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request's texts hold {what}; the PII check reads at most {limit} tokens per "
        "request (limits.max_scan_tokens). Send less text.", code="too_much_text")


def _check_encodable(req: ChatRequest | CompletionRequest) -> None:
    """JSON can carry an unpaired surrogate (``"\\ud800"``), which is no text: the tokenizer
    cannot read it, and treating that as a classifier outage would answer 503 or, with
    ``on_error.pii: allow``, skip the PII check. It is the client's mistake: 400."""
    for s in req.segments:
        try:
            s.text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadRequest(
                f"Invalid text in '{s.param}': it contains an unpaired surrogate "
                f"({e.object[e.start:e.end]!a}) at character {e.start}; send valid Unicode.",
                param=s.param, code="invalid_value") from None


def unfold(cls: Classification, folded: list[Folded]) -> Classification:
    """Entities found in folded texts, with spans and text of the originals."""
    if all(f.identity for f in folded):
        return cls
    pii = []
    for seg, f in zip(cls.pii, folded, strict=True):
        out = []
        for e in seg:
            a, b = f.span(e.start, e.end) if e.end > e.start else (e.start, e.end)
            out.append(PiiEntity(e.type, a, b, f.original[a:b], e.score))
        pii.append(out)
    return dataclasses.replace(cls, pii=pii)


def classify_report(routed: Routed) -> dict[str, Any]:
    """The body of ``POST /api/v1/classify``: the decision without proxying."""
    d = routed.decision
    cls = routed.classification
    segs = routed.request.segments
    return {
        "category": {"name": cls.category if cls else None,
                     "confidence": round(cls.confidence, 4) if cls else None},
        "pii": [
            {"type": e.type, "text": e.text, "start": e.start, "end": e.end,
             "score": round(e.score, 4), "role": segs[i].role,
             "message_index": segs[i].message_index, "path": segs[i].param}
            for i, e in routed.entities
        ],
        "pii_check": routed.pii_status,
        "decision": {"model": d.model, "reason": d.reason, "action": d.action,
                     "denied_pii_types": sorted(d.denied_pii_types),
                     "backend_model": (routed.body or {}).get("model")},
    }


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body

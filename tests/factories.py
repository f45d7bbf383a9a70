"""Valid wire events (the JSON an IDE plugin sends), one builder per event type.

Each builder returns a fresh event (new ``event_id``, ``client_ts`` = now) as a plain dict;
keyword arguments replace fields, and ``without`` drops one.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Factory = Callable[..., Event]


def now_utc() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """A timestamp as clients send it (ISO 8601 with an offset)."""
    return moment.isoformat(timespec="microseconds")


def _common(event_type: str) -> Event:
    return {
        "type": event_type,
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "client_ts": iso(now_utc()),
        "user_id": "user-0001",
        "session_id": "session-0001",
        "ide": "vscode",
        "plugin_version": "1.4.2",
        "language": "python",
    }


def _suggestion_id() -> str:
    return f"sugg-{uuid.uuid4().hex[:12]}"


def completion_served(**overrides: Any) -> Event:
    """The gateway served a completion."""
    event = _common("completion_served") | {
        "suggestion_id": _suggestion_id(),
        "request_id": f"req-{uuid.uuid4().hex[:12]}",
        "arms": {"ctx-window": "treatment", "fim-template": "control"},
        "model": "starcoder2-3b",
        "adapter": "lora-python-v2",
        "latency_ms": 182.5,
        "backend_latency_ms": 151.25,
        "prompt_tokens": 812,
        "completion_chars": 64,
        "completion_lines": 2,
        "finish_reason": "stop",
        "error": None,
    }
    return event | overrides


def suggestion_shown(**overrides: Any) -> Event:
    """A suggestion was displayed."""
    event = _common("suggestion_shown") | {
        "suggestion_id": _suggestion_id(),
        "display_ms": 912.5,
        "chars": 64,
        "lines": 2,
        "multiline": True,
        "trigger": "auto",
    }
    return event | overrides


def suggestion_outcome(**overrides: Any) -> Event:
    """The developer accepted a suggestion."""
    event = _common("suggestion_outcome") | {
        "suggestion_id": _suggestion_id(),
        "outcome": "accepted",
        "accepted_chars": 64,
        "accepted_lines": 2,
        "reason": "tab",
    }
    return event | overrides


def persistence_check(**overrides: Any) -> Event:
    """An accepted suggestion was still there after 120 s."""
    event = _common("persistence_check") | {
        "suggestion_id": _suggestion_id(),
        "checkpoint_s": 120,
        "status": "present",
        "edit_distance_ratio": 0.125,
        "chars_remaining": 60,
    }
    return event | overrides


def typing_volume(**overrides: Any) -> Event:
    """Five minutes of typing, ending at the event's client_ts (now unless overridden)."""
    end = (
        dt.datetime.fromisoformat(overrides["client_ts"]) if "client_ts" in overrides else now_utc()
    )
    event = _common("typing_volume") | {
        "window_start": iso(end - dt.timedelta(minutes=5)),
        "window_end": iso(end),
        "chars_typed_manual": 420,
        "chars_accepted_ai": 180,
        "chars_deleted": 35,
        "chars_excluded_paste": 120,
        "chars_excluded_bulk": 15,
        "chars_excluded_undo_redo": 7,
    }
    return event | overrides


def feedback(**overrides: Any) -> Event:
    """A five-star rating with a comment, on a suggestion."""
    event = _common("feedback") | {
        "feedback_id": str(uuid.uuid4()),
        "rating_scale": "stars",
        "rating": 5,
        "text": "Great completion for the parser loop",
        "target": "suggestion",
        "suggestion_id": _suggestion_id(),
    }
    return event | overrides


def exposure(**overrides: Any) -> Event:
    """The user was first served by an experiment's arm."""
    event = _common("exposure") | {
        "experiment": "ctx-window",
        "arm": "treatment",
        "suggestion_id": _suggestion_id(),
    }
    return event | overrides


FACTORIES: dict[str, Factory] = {
    "completion_served": completion_served,
    "suggestion_shown": suggestion_shown,
    "suggestion_outcome": suggestion_outcome,
    "persistence_check": persistence_check,
    "typing_volume": typing_volume,
    "feedback": feedback,
    "exposure": exposure,
}
EVENT_TYPES = tuple(FACTORIES)


def make(event_type: str, **overrides: Any) -> Event:
    """A valid event of ``event_type``."""
    return FACTORIES[event_type](**overrides)


def without(event: Event, *fields: str) -> Event:
    """A copy of ``event`` lacking ``fields``."""
    return {name: value for name, value in event.items() if name not in fields}


def batch(*events: Any) -> dict[str, Any]:
    """The body of POST /v1/events as a dict."""
    return {"events": list(events)}


def body(*events: Any) -> bytes:
    """The body of POST /v1/events as bytes."""
    return json.dumps(batch(*events)).encode()

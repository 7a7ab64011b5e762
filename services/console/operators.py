"""Who may act in the console: operators sign in with the operator token, which the
registry checks (`GET /v1/auth`) and the console then uses for their actions, so the registry
stays the one place that decides who may change a model. A reader (no session) sees no action.

Sessions live in this process's memory, keyed by a random id in an HttpOnly, SameSite=Strict
cookie; each carries a CSRF token that every action form must send back.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

SESSION_COOKIE = "ctloop_console_session"


@dataclass(frozen=True)
class Session:
    token: str
    """The operator's registry token (kept in memory only)."""
    operator: str
    """How actions name the operator: a fingerprint of the token, never the token."""
    csrf: str
    expires_at: float


def fingerprint(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Sessions:
    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(token, fingerprint(token), secrets.token_urlsafe(24), time.time() + self.lifetime_s)
        with self._lock:
            self._drop_expired()
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at < time.time():
                del self._sessions[session_id]
                return None
            return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _drop_expired(self) -> None:
        now = time.time()
        for key in [k for k, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[key]


def csrf_ok(session: Session, sent: str) -> bool:
    return secrets.compare_digest(session.csrf.encode(), sent.encode())

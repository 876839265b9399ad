"""The revocation check's side of the store: is a session alive, and activity."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..models import TRAVEL_MAX_KMH, TRAVEL_MIN_KM, Location, Session, clip
from .base import StoreBase
from .codec import (
    AGENT_REF,
    HOT_FIELDS,
    coordinates,
    place,
    roles_of,
    session_from_hash,
    signature,
)
from .connections import UNAVAILABLE_ERRORS, unavailable
from .reads import read_fields
from .records import ALIVE, GONE, Actor, CheckResult, CheckStatus

#: The open and activity scripts' impossible-travel limits ('max km/h,min km').
TRAVEL_LIMITS = f"{TRAVEL_MAX_KMH},{TRAVEL_MIN_KM}"


class CheckStore(StoreBase):
    """Sessions as the revocation check sees them (see :class:`StoreBase`)."""

    def check_access(
        self,
        user_id: str,
        session_id: str,
        *,
        now: int,
        actor: Actor | None = None,
        whole: bool = False,
    ) -> CheckResult:
        """The access-token check: is the session alive? Records activity.

        Steady state is one plain ``HMGET``, as cheap as a blocklist ``GET``,
        which also reads what the request is compared with. Only when
        something is to be written or judged (the touch interval passed, a
        new address, another browser/OS family, the idle timeout) a second
        round trip runs the activity script, which decides atomically and
        never recreates a session that is gone.

        :param whole: read the whole session (``HGETALL``) instead, and when
            the check passes in that one read, hand it back
            (:attr:`CheckResult.session`): a request about its own session
            needs no second read (but for its interned user agent, the first
            time this process meets it: see :meth:`_with_agent`).
        """
        key = self.session_key(user_id, session_id)
        client = self._client if self._pid == os.getpid() else None
        raw: dict[str, str] | None = None
        try:
            # The steady state, kept free of context managers: it runs on
            # every authenticated request.
            # execute_command straight away (hmget() only adds argument
            # juggling), or the connection itself (read_fields).
            if whole:
                raw = (client or self.client).execute_command("HGETALL", key)  # type: ignore[no-untyped-call]
                hot = [raw.get(name) for name in HOT_FIELDS] if raw else [None] * len(HOT_FIELDS)
            else:
                hot = read_fields(client or self.client, key, HOT_FIELDS)
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc, self.where) from exc
        return self._judge(user_id, session_id, hot, raw, now=now, actor=actor)

    def check_bound(
        self,
        user_id: str,
        session_id: str,
        *,
        jkt: str,
        proof: str,
        window: int,
        now: int,
        actor: Actor | None = None,
        whole: bool = False,
    ) -> CheckResult:
        """:meth:`check_access` of a DPoP-bound token, and its proof remembered.

        One round trip (``bound.lua``): the session's fields are read and the
        proof's ``jti`` remembered for ``window`` seconds in the user's slot,
        so a replay fails in every worker; the rest is :meth:`check_access`'s.

        :param jkt: the thumbprint of the key the token is bound to; a session
            that records another one is treated as gone.
        :param proof: the digest of the proof (see :func:`.keys.proof_digest`);
            ``""`` when this request's proof is remembered already.
        """
        if not proof:
            return self.check_access(user_id, session_id, now=now, actor=actor, whole=whole)
        keys = [self.session_key(user_id, session_id), self.keys.proof(user_id, proof)]
        with self._available():
            result = self._run("bound", keys, [window, "1" if whole else "0", *HOT_FIELDS, "k"])
        status = int(result[0])
        if status == CheckStatus.PROOF_REPLAYED.value:
            return CheckResult(CheckStatus.PROOF_REPLAYED)
        if status != CheckStatus.ACTIVE.value:
            return GONE
        raw: dict[str, str] | None = None
        if whole:
            raw = dict(zip(result[1::2], result[2::2], strict=True))
            hot, bound_to = [raw.get(name) for name in HOT_FIELDS], raw.get("k")
        else:
            hot, bound_to = result[1:-1], result[-1]
        if bound_to != jkt:
            return GONE
        return self._judge(user_id, session_id, hot, raw, now=now, actor=actor)

    def remember_proof(self, user_id: str, proof: str, window: int) -> bool:
        """Remember a sign-in's DPoP proof (its digest); ``False`` if it was used before."""
        with self._available():
            return bool(self.client.set(self.keys.proof(user_id, proof), "1", nx=True, ex=window))

    def record_mismatch(
        self, user_id: str, session_id: str, *, now: int, actor: Actor | None = None
    ) -> CheckResult:
        """A bound token came without its key: record the anomaly ``dpop_mismatch``
        (at most once per touch interval), and revoke when anomalies revoke."""
        return self._activity(user_id, session_id, now=now, actor=actor, mismatch=True)

    def _judge(
        self,
        user_id: str,
        session_id: str,
        hot: Sequence[str | None],
        raw: dict[str, str] | None,
        *,
        now: int,
        actor: Actor | None,
    ) -> CheckResult:
        """The rest of the check, on the session's hot fields (``raw``: all of them)."""
        seen, last_ip, browser, system, mark = hot
        if seen is None:
            return GONE
        policy = self.policy
        elapsed = now - int(seen)
        ip = actor.ip if actor is not None else None
        if (
            elapsed < policy.touch_interval
            and (policy.idle_timeout is None or elapsed < policy.idle_timeout)
            and (not ip or ip == last_ip)
        ):
            device = actor.device if actor is not None else None
            if (
                device is None
                or (browser is None and system is None)
                or (browser == device.browser and system == device.os)
                or (mark is not None and mark == signature(device, self._country(ip)))
            ):
                if raw:
                    return CheckResult(
                        CheckStatus.ACTIVE, session=self._with_agent(user_id, session_id, raw)
                    )
                return ALIVE
        return self._activity(user_id, session_id, now=now, actor=actor)

    def check_refresh(
        self,
        user_id: str,
        session_id: str,
        *,
        now: int,
        actor: Actor | None = None,
        presented_jti: str | None = None,
        new_jti: str | None = None,
        with_user: bool = False,
        proof: str = "",
        window: int = 0,
    ) -> CheckResult:
        """The refresh-token check: :meth:`check_access` in one atomic round trip.

        :param presented_jti: the refresh token's ``jti``: if it is not the
            session's current one, the token was used before, and the whole
            session is revoked (reason ``refresh_reuse``).
        :param new_jti: rotate the session's refresh token to this ``jti``
            (atomically with the check above).
        :param with_user: the user store's record must still be the session's
            account and not disabled (else the session is revoked:
            ``user_deleted``, ``user_disabled``); the result has its roles.
        :param proof: a DPoP-bound token's proof digest, remembered for
            ``window`` seconds: if it was accepted before, the result is
            :attr:`CheckStatus.PROOF_REPLAYED` and nothing changed.
        """
        return self._activity(
            user_id,
            session_id,
            now=now,
            actor=actor,
            presented_jti=presented_jti or "",
            new_jti=new_jti or "",
            with_user=with_user,
            proof=proof,
            window=window,
        )

    def _activity(
        self,
        user_id: str,
        session_id: str,
        *,
        now: int,
        actor: Actor | None,
        presented_jti: str = "",
        new_jti: str = "",
        with_user: bool = False,
        proof: str = "",
        window: int = 0,
        mismatch: bool = False,
    ) -> CheckResult:
        policy = self.policy
        actor = actor or Actor()
        device = actor.device
        location = self._locate(actor.ip)
        country = (location.country or "") if location else ""
        keys = [
            self.session_key(user_id, session_id),
            self.index_key(user_id),
            self.events_key(user_id),
            self.activity_events_key(user_id),
            self.known_key(user_id),
            *([self.user_key(user_id)] if with_user else []),
            *self.event_keys(user_id),
        ]
        args = [
            now,
            policy.touch_interval,
            actor.ip or "",
            (device.browser or "") if device else "",
            (device.os or "") if device else "",
            "1" if policy.locate else "0",
            country,
            clip((location.city or "") if location else ""),
            signature(device, country) if device else "",
            "1" if policy.revoke_on_anomaly else "0",
            policy.idle_timeout or 0,
            session_id,
            *self._event_args(now, actor),
            presented_jti,
            new_jti,
            "1" if device else "0",
            place(location),
            TRAVEL_LIMITS,
            coordinates(location) or "",
            self.keys.proof(user_id, proof) if proof else "",
            window,
            "1" if mismatch else "0",
        ]
        with self._available():
            result = self._run("activity", keys, args)
        status = CheckStatus(int(result[0]))
        self._recorded(user_id, result[3:])
        if status is not CheckStatus.ACTIVE:
            return GONE if status is CheckStatus.GONE else CheckResult(status)
        roles = roles_of(str(result[2])) if with_user else None
        return CheckResult(status, int(result[1]), roles)

    def _locate(self, ip: str | None) -> Location | None:
        """Where an address is, when location lookup is on."""
        locate = self.policy.locate
        return locate(ip) if locate and ip else None

    def _country(self, ip: str | None) -> str:
        location = self._locate(ip)
        return (location.country or "") if location else ""

    def get(self, user_id: str, session_id: str) -> Session | None:
        """One session of one user, or ``None``."""
        with self._available():
            raw = self._hgetall(self.session_key(user_id, session_id))
            return self._with_agent(user_id, session_id, raw) if raw else None

    def _with_agent(self, user_id: str, session_id: str, raw: dict[str, str]) -> Session:
        """The session of hash ``raw``, with its user agent: this process
        keeps the interned ones it has met (:class:`AgentTexts`), so only
        the first time it meets one is it read (one more round trip)."""
        ref = raw.get(AGENT_REF)
        agents: dict[str, str] | None = None
        if ref is not None:
            text = self.agent_texts.get(ref)
            if text is None:
                with self._available():
                    text = self._run("agent", [self.agents_key(user_id)], [ref])
                if text:
                    self.agent_texts.learn({ref: text})
            agents = {ref: text} if text else None
        return session_from_hash(user_id, session_id, raw, agents)

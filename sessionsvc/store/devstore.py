"""The embedded development store: fakeredis, for a machine without Redis.

Used when ``SESSIONSVC_REDIS_URL`` is unset. ``gunicorn.conf.py`` serves one
store on loopback from the master (:func:`serve_dev_store`), which every
worker and ``flask sessions ...`` run beside it reach; a process that finds
none keeps an in-process store of its own. It keeps nothing across restarts.
fakeredis comes with the ``embedded`` extra and is imported only here.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis

from ..settings import ConfigError

logger = logging.getLogger("sessionsvc")

#: What a process without a Redis URL and without fakeredis is told: one
#: line that names both ways out.
NOT_INSTALLED = (
    "SESSIONSVC_REDIS_URL is not set and the embedded development store is not installed: "
    "set SESSIONSVC_REDIS_URL to your Redis, or install sessionsvc[embedded]"
)


def _fakeredis() -> Any:
    """fakeredis, which the ``embedded`` extra installs; only the development store needs it."""
    try:
        import fakeredis
    except ImportError:
        raise ConfigError(NOT_INSTALLED) from None
    return fakeredis


#: Where ``gunicorn.conf.py`` serves the embedded store to its workers (and
#: to ``flask sessions ...`` run beside it).
DEV_STORE_HOST, DEV_STORE_PORT = "127.0.0.1", 6390
_DEV_STORE_MARK = "sessionsvc:dev-store"


def serve_dev_store(port: int = DEV_STORE_PORT) -> str:
    """Serve one embedded store on loopback from a daemon thread; returns its URL.

    Every process that builds an app without ``SESSIONSVC_REDIS_URL`` on
    this machine then shares it, as gunicorn workers must.
    """
    fakeredis = _fakeredis()
    server = fakeredis.TcpFakeServer((DEV_STORE_HOST, port), server_type="redis")
    threading.Thread(target=server.serve_forever, name="sessionsvc-dev-store", daemon=True).start()
    url = f"redis://{DEV_STORE_HOST}:{port}/0"
    redis.Redis.from_url(url).set(_DEV_STORE_MARK, "1")
    return url


def _dev_store_url() -> str | None:
    """The URL of a dev store served on this machine, if one answers."""
    url = f"redis://{DEV_STORE_HOST}:{DEV_STORE_PORT}/0"
    probe = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        return url if probe.get(_DEV_STORE_MARK) == b"1" else None
    except redis.exceptions.RedisError:
        return None
    finally:
        probe.close()


def embedded_factory(options: dict[str, Any]) -> Callable[[], redis.Redis]:
    """Clients of the dev store served on this machine, or of a new in-process one.

    :param options: the client options for the served store.
    """
    # fakeredis first: without the extra nothing is embedded, not even a
    # store another process serves on the port (anyone on this host could
    # serve one there).
    fakeredis = _fakeredis()
    url = _dev_store_url()
    if url is not None:
        logger.warning("using the embedded development store served at %s", url)
        return lambda: redis.Redis.from_url(url, **options)
    workers = _gunicorn_workers()
    if workers is not None and workers > 1:
        raise ConfigError(PER_WORKER.format(workers=workers))
    logger.warning(
        "SESSIONSVC_REDIS_URL is not set: using an in-process embedded development store, "
        "which keeps nothing across restarts and is not shared with other processes"
    )
    server = fakeredis.FakeServer()

    def private() -> redis.Redis:
        return fakeredis.FakeRedis(server=server, decode_responses=True)  # type: ignore[no-any-return]

    private.private = True  # type: ignore[attr-defined]  # see StoreBase.private
    return private


#: What a worker of a multi-worker server without a Redis URL or a served
#: store is told: each worker would have a store of its own.
PER_WORKER = (
    "SESSIONSVC_REDIS_URL is not set and no embedded development store is served on "
    f"{DEV_STORE_HOST}:{DEV_STORE_PORT}: each of the server's {{workers}} workers would keep "
    "a private store of its own (a token made in one is refused by the others). Run one "
    "worker (gunicorn -w 1), set SESSIONSVC_REDIS_URL to your Redis, or serve with the "
    "config that shares one embedded store: gunicorn -c python:sessionsvc.gunicorn_config "
    "(without --preload, which builds the app before that config serves the store)"
)


def _gunicorn_workers() -> int | None:
    """How many workers the gunicorn loading this app runs, or ``None`` when
    gunicorn is not loading it (its application is not on the call stack).

    A worker builds the app inside gunicorn's ``Application.wsgi()`` (and a
    ``--preload`` master likewise), whose ``cfg`` says how many workers
    there are; nothing else tells an app it is one of several processes
    before its first request (``wsgi.multiprocess``, which
    ``SessionManager`` checks then for other servers).
    """
    base = sys.modules.get("gunicorn.app.base")
    if base is None:
        return None
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, base.BaseApplication):
            return int(owner.cfg.workers)
        frame = frame.f_back
    return None

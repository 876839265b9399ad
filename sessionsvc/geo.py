"""Where an address is: cached lookups in a MaxMind-format GeoIP database.

The database is the file named by ``SESSIONSVC_GEOIP_DB`` (GeoLite2/GeoIP2
City or Country, or another database in their layout). Lookups happen only
when a session's address changes, and one address is looked up again and
again, so answers are cached, in a bounded cache.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import maxminddb

from .models import Location, parse_ip
from .settings import ConfigError

if TYPE_CHECKING:
    from functools import _CacheInfo

#: How many addresses a :class:`Locator` remembers by default.
DEFAULT_CACHE_SIZE = 4096

# Longer than any IPv6 address in text (45 characters with an IPv4 tail) plus
# a scope id. Longer strings are not addresses; refusing them before the
# cache keeps each cache entry small, so the cache's memory is bounded too.
_MAX_ADDRESS_LENGTH = 64

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Locator:
    """Looks addresses up in one MaxMind-format database.

    Safe to share between threads: the reader is read-only once open and the
    cache is a :func:`functools.lru_cache`. The file is memory-mapped, so a
    locator opened before a fork serves every forked worker, and all of them
    share one copy of the database in the page cache.

    :param path: the ``.mmdb`` file, a City or Country database.
    :param cache_size: how many addresses to remember (least recently used
        ones are forgotten first).
    :raises ConfigError: naming ``SESSIONSVC_GEOIP_DB`` and the path, when the
        file is missing, unreadable, not a MaxMind database, or a database of
        another kind (ASN, ISP, ...).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        #: The database file, as given.
        self.path = os.fspath(path)
        # MODE_AUTO memory-maps the file (through the C extension when it is
        # built, in pure Python otherwise). A map has no file offset or lock
        # to share, so gunicorn workers forked after the open keep reading it
        # safely, and every worker reads the same page-cache pages: one copy of
        # a ~60 MB City database however many workers run. MODE_MEMORY would
        # give each worker that opens it its own copy. A database replaced by
        # rename (as geoipupdate does) leaves an open map reading the old file.
        try:
            reader = maxminddb.open_database(self.path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(
                f"SESSIONSVC_GEOIP_DB: cannot read {self.path!r} as a MaxMind database: {exc}"
            ) from None
        metadata = reader.metadata()
        database_type = metadata.database_type
        if "City" not in database_type and "Country" not in database_type:
            reader.close()
            raise ConfigError(
                f"SESSIONSVC_GEOIP_DB: {self.path!r} is a {database_type!r} database; "
                "a City or Country database is needed"
            )
        #: The database's own name for its kind, such as ``GeoLite2-City``.
        self.database_type = database_type
        self._reader = reader
        # The cache closes over the reader, not over self: no reference cycle.
        self._cached = functools.lru_cache(maxsize=cache_size)(
            functools.partial(_locate, reader, metadata.ip_version == 6)
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._reader.closed

    def lookup(self, ip: str | None) -> Location | None:
        """Where ``ip`` is, or ``None`` when that cannot be said.

        ``None`` for no address, text that is not an address, private,
        loopback, link-local, reserved, multicast and unspecified addresses
        (IPv4-mapped IPv6 ones judged by their IPv4 address), and addresses the
        database does not know. The country is the ISO code of
        ``country``, else of ``registered_country``; the city is its English
        name; latitude and longitude are ``location``'s, when it has both.

        :param ip: an IPv4 or IPv6 address in text form.
        :raises ValueError: when the locator is closed.
        """
        if self._reader.closed:
            raise ValueError(f"the GeoIP database {self.path!r} is closed")
        if not ip or len(ip) > _MAX_ADDRESS_LENGTH:
            return None
        return self._cached(ip)

    def cache_info(self) -> _CacheInfo:
        """Hits, misses and size of the lookup cache."""
        return self._cached.cache_info()

    def close(self) -> None:
        """Unmap the database and forget cached answers; later lookups raise."""
        self._reader.close()
        self._cached.cache_clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Locator {self.path!r} ({state})>"


def _locate(reader: maxminddb.Reader, ipv6_database: bool, ip: str) -> Location | None:
    try:
        # ::ffff:a.b.c.d is an IPv4 client seen through a dual-stack socket.
        # Judged as IPv6 it would be "reserved"; looked up as IPv4 it is found.
        address: _Address = parse_ip(ip)
    except ValueError:
        return None
    if not _locatable(address):
        return None
    if address.version == 6 and not ipv6_database:
        return None
    return _location(reader.get(address))


def _locatable(address: _Address) -> bool:
    # is_global is also False for shared (carrier-grade NAT), documentation
    # and benchmarking ranges: none of them says where a client is.
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def _location(record: object) -> Location | None:
    if not isinstance(record, dict):
        return None
    country = _text(record, "country", "iso_code") or _text(
        record, "registered_country", "iso_code"
    )
    city = _text(record, "city", "names", "en")
    if country is None and city is None:
        return None
    latitude, longitude = _degrees(record, "latitude", 90), _degrees(record, "longitude", 180)
    if latitude is None or longitude is None:
        latitude = longitude = None
    return Location(country=country, city=city, latitude=latitude, longitude=longitude)


def _degrees(record: dict[str, Any], name: str, bound: float) -> float | None:
    """``location.latitude`` or ``location.longitude``, when it is a number in range."""
    place = record.get("location")
    value = place.get(name) if isinstance(place, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if -bound <= value <= bound else None


def _text(record: dict[str, Any], *path: str) -> str | None:
    value: object = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None

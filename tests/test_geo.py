"""Location lookup: real answers from the tests' own databases, the filters, the cache."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import maxminddb
import pytest

from sessionsvc.geo import Locator
from sessionsvc.models import Location
from sessionsvc.settings import ConfigError
from tests.geodata import (
    ASN_ENTRIES,
    BERLIN,
    BERLIN_IP,
    CONTINENT_ONLY_IP,
    DEFAULT_ENTRIES,
    FRANCE_IP,
    NEW_YORK,
    NEW_YORK_IP,
    NO_ENGLISH_CITY_IP,
    REGISTERED_ONLY_IP,
    TOKYO,
    TOKYO_IP,
    TRAP,
    UNKNOWN_IPS,
    build_mmdb,
    make_geoip_country_db,
)


@pytest.fixture(scope="session")
def geoip_country_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_geoip_country_db(tmp_path_factory)


@pytest.fixture
def locator(geoip_db: Path) -> Iterator[Locator]:
    with Locator(geoip_db) as opened:
        yield opened


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        (BERLIN_IP, BERLIN),
        ("85.214.0.1", BERLIN),
        (NEW_YORK_IP, NEW_YORK),
        (FRANCE_IP, Location("FR", None)),
        (REGISTERED_ONLY_IP, Location("GB", None)),
        (NO_ENGLISH_CITY_IP, Location("SE", None)),
        (TOKYO_IP, TOKYO),
        ("2001:0218:0000:0000:0000:0000:0000:0001", TOKYO),
        (f"::ffff:{BERLIN_IP}", BERLIN),
    ],
)
def test_known_addresses(locator: Locator, ip: str, expected: Location) -> None:
    assert locator.lookup(ip) == expected


def test_location_json(locator: Locator) -> None:
    location = locator.lookup(BERLIN_IP)
    assert location is not None
    assert location.to_json() == {
        "country": "DE",
        "city": "Berlin",
        "latitude": 52.52,
        "longitude": 13.405,
    }
    # Without coordinates (a Country database, or a record without them),
    # the two members are there, as null.
    assert Location("FR", None).to_json() == {
        "country": "FR",
        "city": None,
        "latitude": None,
        "longitude": None,
    }


@pytest.mark.parametrize("ip", [*UNKNOWN_IPS, CONTINENT_ONLY_IP])
def test_unknown_addresses(locator: Locator, ip: str) -> None:
    assert locator.lookup(ip) is None


UNLOCATABLE = [
    "10.0.0.1",
    "192.168.1.1",
    "172.16.5.4",
    "127.0.0.1",
    "169.254.1.1",
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 (an address to look up, not a bind)
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "203.0.113.5",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
]


@pytest.mark.parametrize("ip", UNLOCATABLE)
def test_private_and_reserved_addresses_are_not_looked_up(locator: Locator, ip: str) -> None:
    assert locator.lookup(ip) is None


@pytest.mark.parametrize("ip", UNLOCATABLE)
def test_the_database_would_have_answered(geoip_db: Path, ip: str) -> None:
    # Every filtered address is in a TRAP network, so the test above shows the
    # filter at work, not a gap in the data.
    with maxminddb.open_database(geoip_db) as reader:
        record = reader.get(ip.removeprefix("::ffff:").split("%")[0])
    assert isinstance(record, dict)
    assert record["country"] == {"iso_code": TRAP, "names": {"en": TRAP}}


@pytest.mark.parametrize(
    "ip",
    [
        None,
        "",
        "localhost",
        "not an address",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "085.214.132.117",
        f" {BERLIN_IP}",
        f"{BERLIN_IP}/32",
        "2001:218::g",
        "1" * 10_000,
    ],
)
def test_invalid_addresses(locator: Locator, ip: str | None) -> None:
    assert locator.lookup(ip) is None


def test_country_database(geoip_country_db: Path) -> None:
    with Locator(geoip_country_db) as locator:
        assert locator.database_type == "GeoLite2-Country"
        assert locator.lookup(BERLIN_IP) == Location("DE", None)
        assert locator.lookup(TOKYO_IP) == Location("JP", None)
        assert locator.lookup(REGISTERED_ONLY_IP) == Location("GB", None)
        assert locator.lookup("10.0.0.1") is None
        assert locator.lookup(UNKNOWN_IPS[0]) is None


def test_ipv4_only_database(tmp_path: Path) -> None:
    path = build_mmdb(
        tmp_path / "v4.mmdb", {"85.214.0.0/16": DEFAULT_ENTRIES["85.214.0.0/16"]}, ip_version=4
    )
    with Locator(path) as locator:
        assert locator.lookup(BERLIN_IP) == BERLIN
        assert locator.lookup(f"::ffff:{BERLIN_IP}") == BERLIN
        assert locator.lookup(TOKYO_IP) is None


def test_other_city_database_names(tmp_path: Path) -> None:
    path = build_mmdb(
        tmp_path / "dbip.mmdb",
        {"85.214.0.0/16": DEFAULT_ENTRIES["85.214.0.0/16"]},
        database_type="DBIP-City-Lite",
    )
    with Locator(path) as locator:
        assert locator.lookup(BERLIN_IP) == BERLIN


def names_key_and(path: Path) -> str:
    return rf"SESSIONSVC_GEOIP_DB.*{re.escape(repr(str(path)))}"


def test_asn_database_is_refused(tmp_path: Path) -> None:
    path = build_mmdb(tmp_path / "asn.mmdb", ASN_ENTRIES, database_type="GeoLite2-ASN")
    with pytest.raises(ConfigError, match=names_key_and(path)) as raised:
        Locator(path)
    assert "GeoLite2-ASN" in str(raised.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.mmdb"
    with pytest.raises(ConfigError, match=names_key_and(path)):
        Locator(path)


@pytest.mark.parametrize(
    "content", [b"", b"not a database", os.urandom(4096)], ids=["empty", "text", "random"]
)
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=names_key_and(path)):
        Locator(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=names_key_and(tmp_path)):
        Locator(tmp_path)


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SESSIONSVC_GEOIP_DB"):
        Locator(str(tmp_path / "missing.mmdb"))


def test_repeated_lookups_hit_the_cache(locator: Locator) -> None:
    first = locator.lookup(BERLIN_IP)
    assert locator.lookup(BERLIN_IP) is first
    info = locator.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)


def test_cache_is_bounded(geoip_db: Path) -> None:
    with Locator(geoip_db, cache_size=16) as locator:
        for n in range(2000):
            assert locator.lookup(f"85.214.{n // 256}.{n % 256}") == BERLIN
        assert locator.cache_info().currsize == 16
        assert locator.cache_info().maxsize == 16


def test_overlong_text_is_not_cached(locator: Locator) -> None:
    assert locator.lookup("1" * 10_000) is None
    assert locator.cache_info().currsize == 0


def test_threads_share_one_locator(geoip_db: Path) -> None:
    cases = {
        BERLIN_IP: BERLIN,
        NEW_YORK_IP: NEW_YORK,
        FRANCE_IP: Location("FR", None),
        TOKYO_IP: TOKYO,
        "10.0.0.1": None,
        UNKNOWN_IPS[0]: None,
    }
    # A cache smaller than the working set keeps the threads reading the database.
    with Locator(geoip_db, cache_size=2) as locator:

        def work(offset: int) -> list[bool]:
            ips = list(cases)[offset % len(cases) :] + list(cases)[: offset % len(cases)]
            return [locator.lookup(ip) == cases[ip] for ip in ips * 100]

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(work, range(8)))
    assert all(all(batch) and len(batch) == 600 for batch in results)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_lookup_in_a_forked_child(locator: Locator) -> None:
    # As in a gunicorn worker forked after the app, and its locator, loaded.
    assert locator.lookup(BERLIN_IP) == BERLIN
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        try:
            answers = [locator.lookup(ip) for ip in (BERLIN_IP, TOKYO_IP, FRANCE_IP)]
            os.write(write, repr(answers).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert output == repr([BERLIN, TOKYO, Location("FR", None)])
    assert locator.lookup(NEW_YORK_IP) == NEW_YORK


def test_close(geoip_db: Path) -> None:
    locator = Locator(geoip_db)
    assert locator.lookup(BERLIN_IP) == BERLIN
    assert not locator.closed
    locator.close()
    assert locator.closed
    assert locator.cache_info().currsize == 0
    with pytest.raises(ValueError, match="closed"):
        locator.lookup(BERLIN_IP)
    locator.close()  # a second close is harmless
    assert "closed" in repr(locator)


def test_context_manager_closes(geoip_db: Path) -> None:
    with Locator(geoip_db) as locator:
        assert locator.lookup(TOKYO_IP) == TOKYO
    assert locator.closed

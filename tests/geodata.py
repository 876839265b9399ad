"""The tests' own MaxMind-format databases, built with mmdb-writer: nothing is downloaded.

Records follow the GeoLite2/GeoIP2 layout (``country.iso_code``,
``registered_country.iso_code``, ``city.names.en``); the data is made up.

The networks are ordinary public ranges rather than the documentation ranges
(``192.0.2.0/24``, ``198.51.100.0/24``, ``203.0.113.0/24``, ``2001:db8::/32``):
Python's :mod:`ipaddress` counts those as private, so a lookup never reaches
the database for them. Those ranges, and every other private or reserved one,
are in :data:`DEFAULT_ENTRIES` too, as the :data:`TRAP` country, so a test that
expects ``None`` for them proves the address was filtered out, not merely absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

from sessionsvc.models import Location

#: Addresses with a known answer in :data:`DEFAULT_ENTRIES`.
BERLIN_IP = "85.214.132.117"
NEW_YORK_IP = "216.160.83.57"
FRANCE_IP = "2.0.2.3"  # country, no city
REGISTERED_ONLY_IP = "81.2.69.160"  # registered_country GB, no country
NO_ENGLISH_CITY_IP = "89.160.20.115"  # SE, city named only in Swedish
CONTINENT_ONLY_IP = "185.1.2.3"  # a record with neither country nor city
TOKYO_IP = "2001:218:1:2::3"
SYDNEY_IP = "1.120.7.9"
SAO_PAULO_IP = "200.147.3.4"
POTSDAM_IP = "31.16.5.6"  # 27 km from Berlin
LOS_ANGELES_IP = "66.249.66.1"  # 3,936 km from New York, the same country
#: What the database says of some of them.
BERLIN = Location("DE", "Berlin", 52.52, 13.405)
NEW_YORK = Location("US", "New York", 40.7128, -74.006)
TOKYO = Location("JP", "Tokyo", 35.6762, 139.6503)
#: Public addresses in no network of the database.
UNKNOWN_IPS = ("9.9.9.9", "2606:4700:4700::1111")

#: The country every private/reserved range carries: seeing it means the filter failed.
TRAP = "ZZ"

_COUNTRY_NAMES = {
    "DE": "Germany",
    "US": "United States",
    "FR": "France",
    "GB": "United Kingdom",
    "SE": "Sweden",
    "JP": "Japan",
    "AU": "Australia",
    "BR": "Brazil",
}


def place(
    country: str | None,
    city: str | None = None,
    *,
    registered_country: str | None = None,
    at: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A record in the GeoLite2-City layout.

    :param registered_country: defaults to ``country``, as for most real networks.
    :param at: latitude and longitude (``location``), as City databases have them.
    """
    record: dict[str, Any] = {}
    if at is not None:
        record["location"] = {"latitude": at[0], "longitude": at[1], "accuracy_radius": 20}
    if country is not None:
        record["country"] = _country(country)
    registered = registered_country or country
    if registered is not None:
        record["registered_country"] = _country(registered)
    if city is not None:
        record["city"] = {"names": {"en": city}}
    return record


def _country(iso_code: str) -> dict[str, Any]:
    return {"iso_code": iso_code, "names": {"en": _COUNTRY_NAMES.get(iso_code, iso_code)}}


_UNLOCATABLE = (
    "0.0.0.0/8",  # "this network"; ::1 and :: sit here in an IPv6 tree's IPv4 subtree
    "10.0.0.0/8",
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)

#: Network → record; ``build_mmdb(path, DEFAULT_ENTRIES)`` is the usual test database.
DEFAULT_ENTRIES: dict[str, dict[str, Any]] = {
    "85.214.0.0/16": place("DE", "Berlin", at=(52.52, 13.405)),
    "216.160.83.0/24": place("US", "New York", at=(40.7128, -74.006)),
    "2.0.0.0/16": place("FR"),
    "81.2.69.0/24": place(None, registered_country="GB"),
    "89.160.20.0/24": {
        "country": _country("SE"),
        "city": {"names": {"sv": "Linköping"}},
    },
    "185.1.0.0/16": {"continent": {"code": "EU", "names": {"en": "Europe"}}},
    "2001:218::/32": place("JP", "Tokyo", at=(35.6762, 139.6503)),
    # Cities on other continents, for impossible travel.
    "1.120.0.0/13": place("AU", "Sydney", at=(-33.8688, 151.2093)),
    "200.147.0.0/16": place("BR", "São Paulo", at=(-23.5505, -46.6333)),
    "31.16.0.0/16": place("DE", "Potsdam", at=(52.3906, 13.0645)),
    "66.249.0.0/16": place("US", "Los Angeles", at=(34.0522, -118.2437)),
    **{network: place(TRAP, "Trap") for network in _UNLOCATABLE},
}

#: One ASN record: a database of this type must be refused.
ASN_ENTRIES: dict[str, dict[str, Any]] = {
    "85.214.0.0/16": {
        "autonomous_system_number": MmdbU32(6724),
        "autonomous_system_organization": "Strato AG",
    },
}


def country_only(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same entries as a GeoLite2-Country database holds them: no ``city``, no ``location``."""
    return {
        network: {key: value for key, value in record.items() if key not in ("city", "location")}
        for network, record in entries.items()
    }


def build_mmdb(
    path: str | Path,
    entries: Mapping[str, Mapping[str, Any]],
    *,
    database_type: str = "GeoLite2-City",
    ip_version: int = 6,
) -> Path:
    """Write ``entries`` (CIDR network → record) to a MaxMind DB file at ``path``.

    As in MaxMind's own databases, an IPv6 database holds the IPv4 space at
    ``::/96``, where readers look IPv4 addresses up.

    :param ip_version: 4 builds an IPv4-only database (no IPv6 entries allowed).
    :return: the path written.
    """
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        languages=["en"],
        description={"en": f"sessionsvc test {database_type}"},
        ipv4_compatible=ip_version == 6,
    )
    for network, record in entries.items():
        writer.insert_network(IPSet([network]), dict(record))
    path = Path(path)
    writer.to_db_file(str(path))
    return path


def make_geoip_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GeoLite2-City database of :data:`DEFAULT_ENTRIES` (the ``geoip_db`` fixture)."""
    return build_mmdb(tmp_path_factory.mktemp("geoip") / "city.mmdb", DEFAULT_ENTRIES)


def make_geoip_country_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GeoLite2-Country form of :data:`DEFAULT_ENTRIES` (the ``geoip_country_db`` fixture)."""
    return build_mmdb(
        tmp_path_factory.mktemp("geoip") / "country.mmdb",
        country_only(DEFAULT_ENTRIES),
        database_type="GeoLite2-Country",
    )

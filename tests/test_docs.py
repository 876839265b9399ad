"""docs/security.md stays true: every test it cites exists."""

from __future__ import annotations

import re

from tests.servers import ROOT

SECURITY = ROOT / "docs" / "security.md"


def test_every_test_the_threat_model_cites_exists() -> None:
    text = SECURITY.read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`", text)
    # "`::name`" right after a cited file names another test of that file.
    follow_ups = re.findall(r"`(tests/[\w/]+\.py)::\w+`((?:, `::\w+`)+)", text)
    names = [(path, name.lstrip(":")) for path, name in cited]
    for path, rest in follow_ups:
        names += [(path, extra) for extra in re.findall(r"`::(\w+)`", rest)]
    assert len(names) >= 20
    for path, name in names:
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} is gone"

"""The project's documents stay true: docs/security.md cites tests that
exist, docs/api.md names every route, error, key, command, reason and
operationId, and nothing in the repository points outside it."""

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


API = ROOT / "docs" / "api.md"


def test_the_reference_names_every_route_error_key_command_and_reason() -> None:
    from sessionsvc import create_app
    from sessionsvc import errors as error_classes
    from sessionsvc.cli import sessions_cli
    from sessionsvc.models import EVENT_TYPES, REVOCATION_REASONS
    from sessionsvc.settings import KEYS
    from tests.clients import JWT_KEY

    text = API.read_text()
    app = create_app({"TESTING": True, "JWT_SECRET_KEY": JWT_KEY})
    # The pages' assets (each page's own and the scripts they share) are files, not routes.
    internal = (
        "static",
        "flasgger.",
        "sessionsvc_account.static",
        "sessionsvc_account.shared.static",
        "sessionsvc_console.static",
        "sessionsvc_console.shared.static",
    )
    routes = {
        rule.rule.replace("<", "{").replace(">", "}").rstrip("/") or "/"
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith(internal) and rule.rule != "/apidocs/index.html"
    }
    assert "/api/v1/admin/users/{user_id}" in routes
    missing = {route for route in routes if f"`{route}" not in text and route not in text}
    assert missing <= {"/oauth2-redirect.html"}, missing
    codes = {
        cls.code
        for cls in vars(error_classes).values()
        if isinstance(cls, type) and issubclass(cls, error_classes.SessionsvcError)
    } - {"internal_error"}
    assert {code for code in codes if f"`{code}`" not in text} == set()
    assert {key.name for key in KEYS if f"`{key.name}`" not in text} == set()
    assert {name for name in sessions_cli.commands if f"`{name}" not in text} == set()
    assert {r for r in (*REVOCATION_REASONS, *EVENT_TYPES) if f"`{r}`" not in text} == set()


def test_nothing_in_the_repository_links_outside_it() -> None:
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        assert "../shared" not in path.read_text(), path
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (path.parent / target).exists(), (path, target)


def test_the_reference_lists_every_operation_id() -> None:
    from sessionsvc.openapi import OPERATIONS

    section = API.read_text().split("### 6.1 The OpenAPI document")[1].split("\n## ")[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    assert [row[1].strip() for row in rows] == ["`sessions`", "`auth`", "`admin`", "`service`"]
    listed = [name for row in rows for name in re.findall(r"`([a-z_]+)`", row[2])]
    assert sorted(listed) == sorted(OPERATIONS)


def test_no_code_or_test_cites_a_spec_outside_the_repository() -> None:
    # (This file is left out: it has to spell the phrases it looks for.)
    cites = re.compile(r"\bthe spec\b|\bspec's\b|\bspec section\b", re.I)
    for folder in ("sessionsvc", "tests", "examples", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "node_modules" in path.parts or path.name == "test_docs.py":
                continue
            text = path.read_text()
            found = cites.search(text)
            assert found is None, f"{path.relative_to(ROOT)}: {found and found.group()}"
            assert "API.md" not in text, path
    for path in (ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))):
        assert "API.md" not in path.read_text(), path

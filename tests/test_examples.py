"""examples/host_app.py, the README's mounting example, runs as documented."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from flask import Flask

from tests.clients import CHROME, IPHONE, JWT_KEY, assert_problem
from tests.servers import ROOT


def host_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("host_app", ROOT / "examples" / "host_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_host(backend: Any) -> Flask:
    config = {"TESTING": True, "JWT_SECRET_KEY": JWT_KEY, **backend.app_config()}
    app: Flask = host_module().create_app(config, **backend.app_kwargs())
    return app


def test_the_host_app_signs_in_lists_and_signs_out_everywhere(backend: Any) -> None:
    app = make_host(backend)
    client = app.test_client()
    credentials = {"email": "ada@example.com", "password": "correct horse"}
    assert client.post("/signup", json=credentials).status_code == 201
    assert client.post("/signup", json=credentials).status_code == 409
    assert client.post("/login", json={**credentials, "password": "wrong"}).status_code == 401

    laptop = client.post("/login", json=credentials, headers={"User-Agent": CHROME}).get_json()
    phone = client.post("/login", json=credentials, headers={"User-Agent": IPHONE}).get_json()
    as_laptop = {"Authorization": f"Bearer {laptop['access_token']}", "User-Agent": CHROME}
    as_phone = {"Authorization": f"Bearer {phone['access_token']}", "User-Agent": IPHONE}
    assert client.get("/me", headers=as_phone).get_json() == {"email": "ada@example.com"}
    # The extension's own routes, mounted in the host app.
    listed = client.get("/api/v1/sessions", headers=as_laptop).get_json()["sessions"]
    assert {s["id"] for s in listed} == {laptop["session_id"], phone["session_id"]}

    changed = client.post("/password", json={"new_password": "battery staple"}, headers=as_laptop)
    assert changed.get_json() == {"revoked": 2}
    for headers in (as_laptop, as_phone):
        assert_problem(client.get("/me", headers=headers), 401, "session_revoked")
    assert client.post("/login", json=credentials).status_code == 401
    fresh = client.post("/login", json={**credentials, "password": "battery staple"})
    assert fresh.status_code == 200
    with app.app_context():
        events = app.extensions["sessionsvc"].manager.events_for("1", limit=10)
    reasons = [e.detail["reason"] for e in events if e.type == "session.revoked"]
    assert reasons == ["admin", "admin"]

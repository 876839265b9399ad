"""examples/host_app.py (the README's mounting recipe, which must be its code), and
examples/webhook_receiver.py run as documented."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from types import ModuleType
from typing import Any

from flask import Flask

from tests.clients import CHROME, IPHONE, JWT_KEY, assert_jwt_answer
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


def test_the_host_app_runs_the_whole_recipe(backend: Any) -> None:
    """Login, refresh, logout and password change, as the README shows them."""
    app = make_host(backend)
    client = app.test_client()
    credentials = {"email": "ada@example.com", "password": "correct horse"}
    assert client.post("/signup", json=credentials).status_code == 201
    assert client.post("/signup", json=credentials).status_code == 409
    assert client.post("/login", json={**credentials, "password": "wrong"}).status_code == 401

    def signed_in(agent: str) -> tuple[dict[str, Any], dict[str, str]]:
        pair = client.post("/login", json=credentials, headers={"User-Agent": agent}).get_json()
        return pair, {"Authorization": f"Bearer {pair['access_token']}", "User-Agent": agent}

    laptop, as_laptop = signed_in(CHROME)
    phone, as_phone = signed_in(IPHONE)
    assert client.get("/me", headers=as_phone).get_json() == {"email": "ada@example.com"}
    # The extension's own routes, mounted in the host app.
    listed = client.get("/api/v1/sessions", headers=as_laptop).get_json()["sessions"]
    assert {s["id"] for s in listed} == {laptop["session_id"], phone["session_id"]}

    # Refresh: a new pair for the same session, and the spent refresh token
    # presented again ends the session (the host's revoked answer).
    spent = {"Authorization": f"Bearer {phone['refresh_token']}", "User-Agent": IPHONE}
    renewed = client.post("/refresh", headers=spent).get_json()
    assert renewed["session_id"] == phone["session_id"]
    assert renewed["access_token"] != phone["access_token"]
    as_renewed = {"Authorization": f"Bearer {renewed['access_token']}", "User-Agent": IPHONE}
    assert client.get("/me", headers=as_renewed).status_code == 200
    assert_jwt_answer(client.post("/refresh", headers=spent), 401, "Token has been revoked")
    assert_jwt_answer(client.get("/me", headers=as_renewed), 401, "Token has been revoked")

    # Logout ends the calling session only.
    phone, as_phone = signed_in(IPHONE)
    assert client.post("/logout", headers=as_phone).status_code == 204
    assert_jwt_answer(client.get("/me", headers=as_phone), 401, "Token has been revoked")
    assert client.get("/me", headers=as_laptop).status_code == 200

    # Password change: the old password is checked; the other sessions end.
    phone, as_phone = signed_in(IPHONE)
    change = {"current_password": "correct horse", "new_password": "battery staple"}
    wrong = {**change, "current_password": "wrong"}
    assert client.post("/password", json=wrong, headers=as_laptop).status_code == 401
    changed = client.post("/password", json=change, headers=as_laptop)
    assert changed.get_json() == {"revoked": 1}
    assert_jwt_answer(client.get("/me", headers=as_phone), 401, "Token has been revoked")
    assert client.get("/me", headers=as_laptop).status_code == 200
    assert client.post("/login", json=credentials).status_code == 401
    fresh = client.post("/login", json={**credentials, "password": "battery staple"})
    assert fresh.status_code == 200
    with app.app_context():
        events = app.extensions["sessionsvc"].manager.events_for("1", limit=20)
    reasons = [e.detail["reason"] for e in events if e.type == "session.revoked"]
    assert reasons == ["password_changed", "logout", "refresh_reuse"]


def test_the_readmes_recipe_is_the_example_as_it_is() -> None:
    """One source: the README's host recipe is the example's, line for line."""
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- host-recipe:start -->\n```python\n(.*?)```\n", readme, re.S)
    assert shown, "the README has no host-recipe block"
    example = (ROOT / "examples" / "host_app.py").read_text()
    region = re.search(r"# README.md .*? as they are.\n(.*?)\n+# recipe: end\n", example, re.S)
    assert region, "examples/host_app.py marks no recipe"
    assert shown.group(1) == region.group(1) + "\n"


def example_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_webhook_receiver_acts_once_on_each_verified_delivery(backend: Any) -> None:
    """examples/webhook_receiver.py behind a real HTTP server, fed by a deliverer."""
    import base64
    import threading

    from werkzeug.serving import make_server

    from sessionsvc.app import create_app
    from sessionsvc.state import current_state
    from sessionsvc.webhooks import Deliverer, headers_of, post
    from tests.clients import Auth

    secret = "whsec_" + base64.b64encode(b"receiver-example-secret-32-bytes").decode()
    receiver = example_module("webhook_receiver").create_app(secret)
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks"
    try:
        app = create_app(
            {
                "TESTING": True,
                "JWT_SECRET_KEY": JWT_KEY,
                "SESSIONSVC_LOGIN_RATE_LIMIT": "",
                "SESSIONSVC_WEBHOOK_URLS": url,
                "SESSIONSVC_WEBHOOK_SECRET": secret,
                **backend.app_config(),
            },
            **backend.app_kwargs(),
        )
        tokens = Auth(app).login(user_agent=IPHONE)
        with app.app_context():
            state = current_state()
            deliverer = Deliverer(state.store, state.settings)
            [endpoint] = deliverer.endpoints
            assert deliverer.step(endpoint, "example")
            assert not deliverer.step(endpoint, "example")
        [event] = receiver.config["RECEIVED"]
        assert event["type"] == "session.created"
        assert event["data"]["session_id"] == tokens["session_id"]
        assert event["data"]["user_agent"] == IPHONE
        # The same delivery again (a retry): accepted, not acted on twice.
        body = json.dumps(event, separators=(",", ":")).encode()
        again = headers_of(secret, event["data"]["id"], body, now=int(time.time()))
        assert post(url, body, again) == 204
        assert len(receiver.config["RECEIVED"]) == 1
        # A forged or altered one is refused.
        assert post(url, body.replace(b"iPhone", b"iPad"), again) == 400
        forged = headers_of("whsec_" + base64.b64encode(b"x" * 32).decode(), "e1", body, now=1)
        assert post(url, body, forged) == 400
        assert len(receiver.config["RECEIVED"]) == 1
    finally:
        server.shutdown()


def test_the_dpop_client_example_binds_its_tokens_and_a_copy_is_refused(redis_url: str) -> None:
    """examples/dpop_client.py against the service under gunicorn, as documented."""
    from tests.backends import served

    dpop_example = example_module("dpop_client")
    with served(redis_url, {"alice": "correct horse battery"}) as service:
        seen = dpop_example.bound_device(service.base, "alice", "correct horse battery")
    assert seen == {
        "token_type": "DPoP",
        "bound": [True],
        "stolen": (401, "invalid_dpop_proof"),
        "refreshed": "DPoP",
        "signed_out": 204,
    }


def test_the_readmes_dpop_example_is_the_example_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- dpop-client:start -->\n```python\n(.*?)```\n", readme, re.S)
    assert shown, "the README has no dpop-client block"
    example = (ROOT / "examples" / "dpop_client.py").read_text()
    region = re.search(
        r"# README.md shows this part as it is.\n(.*?)\n+# README: end\n", example, re.S
    )
    assert region, "examples/dpop_client.py marks no README part"
    assert shown.group(1) == region.group(1) + "\n"

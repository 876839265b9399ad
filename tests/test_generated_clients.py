"""Clients generated from the served ``/apispec.json`` work against the real service.

Python: ``openapi-python-client`` generates a client from the document of a
service under gunicorn on the real Redis, printing no warning, and
``examples/generated_client.py`` drives the whole flow through it: two
devices sign in, list, read, rename, sign the other out, the signed-out
device's next call comes back as a parsed 401 problem, events are read.

TypeScript: ``openapi-typescript`` generates types from the same document
and ``tsc --noEmit`` type-checks ``examples/typescript/sessions.ts`` and
``dpop.ts`` (its DPoP proof signer) against them; a field or path the
service does not have must fail the check. The node packages are installed
by ``npm ci --prefix examples/typescript`` (``make test`` and ``.ci/run``
run it); without them the test skips loudly, and fails under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.backends import served
from tests.servers import ROOT, Gunicorn
from tests.skips import cannot_run

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
BIN = Path(sys.executable).parent
TYPESCRIPT = ROOT / "examples" / "typescript"


@pytest.fixture(scope="module")
def service(redis_url: str) -> Iterator[Gunicorn]:
    """The standalone service under gunicorn on the real Redis, with a user per test."""
    users = {name: PASSWORD for name in ("alice", "bob", "carol")}
    with served(redis_url, users, SESSIONSVC_LOGIN_RATE_LIMIT="") as running:
        yield running


def generator_env() -> dict[str, str]:
    # The generator formats its output with ruff, which it looks up on PATH.
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def python_client(service: Gunicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package ``sessionsvc_client``, generated as ``make client`` does; its folder."""
    folder = tmp_path_factory.mktemp("python-client")
    generated = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--url",
            f"{service.base}/apispec.json",
            "--meta",
            "none",
            "--output-path",
            str(folder / "sessionsvc_client"),
        ],
        capture_output=True,
        text=True,
        env=generator_env(),
        timeout=120,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "warning" not in output.lower(), output
    assert "error" not in output.lower(), output
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.startswith("sessionsvc_client")]:
            del sys.modules[name]


def example() -> ModuleType:
    path = ROOT / "examples" / "generated_client.py"
    spec = importlib.util.spec_from_file_location("generated_client_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_make_client_runs_the_generator_as_this_test_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(
        r"openapi-python-client generate --url \$\(CLIENT_URL\)/apispec\.json --meta none "
        r"--output-path \$\(CLIENT_DIR\)/sessionsvc_client",
        makefile,
    )


def test_the_generated_client_drives_two_devices_through_the_whole_flow(
    service: Gunicorn, python_client: Path
) -> None:
    lines: list[str] = []
    seen = example().walk(
        service.base, "alice", PASSWORD, say=lambda *parts, sep=" ": lines.append(sep.join(parts))
    )
    # Two devices, the calling one starred.
    assert sorted(seen.devices) == ["  Mobile Safari 17 on iOS 17.1", "* Chrome 131 on Windows 10"]
    # The laptop's tokens are bound to its key (DPoP through httpx's auth=), the phone's not.
    assert seen.bound == {
        "* Chrome 131 on Windows 10": True,
        "  Mobile Safari 17 on iOS 17.1": False,
    }
    assert seen.phone_session["device"]["type"] == "mobile"
    assert seen.phone_session["current"] is False
    assert seen.phone_session["ip"] == "127.0.0.1"
    assert seen.laptop_name == "Laptop"
    assert seen.revoked == 1
    # The phone's next call: the 401 problem document, parsed by the client.
    problem = seen.phone_problem
    assert type(problem).__name__ == "Problem"
    assert (problem.status, problem.code, problem.title) == (401, "session_revoked", "Unauthorized")
    # The events the laptop reads, newest first.
    assert seen.events[0] == ("session.revoked", "others")
    assert seen.events.count(("session.created", None)) == 2
    assert "Signed out 1 other device(s)" in lines


def test_the_generated_client_parses_problems_and_rotates_tokens(
    service: Gunicorn, python_client: Path
) -> None:
    from sessionsvc_client import AuthenticatedClient, Client
    from sessionsvc_client.api.auth import login, refresh
    from sessionsvc_client.api.sessions import get_session, list_sessions
    from sessionsvc_client.models import Credentials, Problem, TokenPair

    def as_bearer(token: str) -> AuthenticatedClient:
        return AuthenticatedClient(base_url=service.base, token=token)

    with Client(base_url=service.base) as anonymous:
        wrong = login.sync(client=anonymous, body=Credentials(username="bob", password="not it"))
        pair = login.sync(client=anonymous, body=Credentials(username="bob", password=PASSWORD))
    assert isinstance(wrong, Problem)
    assert (wrong.status, wrong.code) == (401, "invalid_credentials")
    assert isinstance(pair, TokenPair)
    assert pair.token_type.value == "Bearer"
    assert pair.expires_in == 900

    with as_bearer(pair.access_token) as bob:
        missing = get_session.sync("no-such-session", client=bob)
    assert isinstance(missing, Problem)
    assert (missing.status, missing.code) == (404, "session_not_found")

    with as_bearer(pair.refresh_token) as refresher:
        rotated = refresh.sync(client=refresher)
        reused = refresh.sync(client=refresher)
    assert isinstance(rotated, TokenPair)
    assert rotated.session_id == pair.session_id
    assert rotated.refresh_token != pair.refresh_token
    assert isinstance(reused, Problem)
    assert reused.code == "refresh_token_reused"
    # Reuse revoked the whole session: the rotated tokens are dead too.
    with as_bearer(rotated.access_token) as bob:
        after = list_sessions.sync(client=bob)
    assert isinstance(after, Problem)
    assert after.code == "session_revoked"


def test_the_walkthrough_runs_from_the_command_line(service: Gunicorn, python_client: Path) -> None:
    ran = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "generated_client.py"), "--url", service.base,
         "--username", "carol"],
        capture_output=True,
        text=True,
        env={**os.environ, "SESSIONSVC_PASSWORD": PASSWORD, "PYTHONPATH": str(python_client)},
        timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "Signed out 1 other device(s)" in ran.stdout
    assert "The phone's next call: 401 session_revoked: " in ran.stdout
    assert ran.stderr == ""


def typescript_tools() -> Path:
    modules = TYPESCRIPT / "node_modules"
    if shutil.which("node") is None:
        cannot_run("node is not on PATH: the TypeScript client check cannot run")
    if (
        not (modules / ".bin" / "tsc").exists()
        or not (modules / ".bin" / "openapi-typescript").exists()
    ):
        cannot_run(
            "examples/typescript/node_modules is missing: the TypeScript client check cannot run "
            "(npm ci --prefix examples/typescript; make test and .ci/run do it)"
        )
    return modules / ".bin"


def tsc(bin_dir: Path, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "tsc"), "--noEmit", "-p", str(project)],
        cwd=project,  # errors name files relative to it
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_typescript_types_generated_from_the_document_check_the_typed_client(
    service: Gunicorn, tmp_path: Path
) -> None:
    bin_dir = typescript_tools()
    for name in ("sessions.ts", "dpop.ts", "tsconfig.json"):
        shutil.copy(TYPESCRIPT / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(TYPESCRIPT / "node_modules")
    generated = subprocess.run(
        [str(bin_dir / "openapi-typescript"), f"{service.base}/apispec.json", "-o",
         str(tmp_path / "schema.d.ts")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "warn" not in generated.stderr.lower(), generated.stderr
    types = (tmp_path / "schema.d.ts").read_text()
    for operation_id in ("list_sessions", "revoke_other_sessions", "login", "admin_get_user"):
        assert f'operations["{operation_id}"]' in types
    checked = tsc(bin_dir, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The check has teeth: a field, a path and a parameter the service does
    # not have are each refused (three copies of the client, one mistake
    # each, checked in one run).
    client = (tmp_path / "sessions.ts").read_text()
    mistakes = {
        "field.ts": ("session.last_seen_at", "session.last_used_at", "last_used_at"),
        "path.ts": ('"/api/v1/sessions/events"', '"/api/v1/session/events"', "session/events"),
        "parameter.ts": ('include_current: "false"', 'include_current: "no"', '"no"'),
    }
    for name, (right, wrong, _) in mistakes.items():
        assert right in client
        (tmp_path / name).write_text(client.replace(right, wrong))
    config = json.loads((tmp_path / "tsconfig.json").read_text())
    (tmp_path / "tsconfig.json").write_text(json.dumps({**config, "files": list(mistakes)}))
    refused = tsc(bin_dir, tmp_path)
    assert refused.returncode != 0
    for name, (_, _, message) in mistakes.items():
        errors = [line for line in refused.stdout.splitlines() if line.startswith(f"{name}(")]
        assert any(message in line for line in errors), (name, refused.stdout)

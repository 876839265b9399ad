"""sessionsvc installs as users install it: from the wheel, into a fresh venv.

The sdist and wheel are built from a copy of the checkout with
``python -m build`` (so the checkout is left as it was) and checked with
``twine check --strict``. The wheel must carry every file of the package
(the Lua scripts, templates and static files included) and nothing else;
installed into a new virtual environment, away from the repository, it runs
the README's mounting example and the ``flask sessions`` CLI against a
redis-server of the test's own. Without the ``embedded`` extra and without
``SESSIONSVC_REDIS_URL`` it says so in one line; with the extra it runs on
the embedded store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionsvc.store.devstore import NOT_INSTALLED
from tests.clients import JWT_KEY
from tests.servers import ROOT, RedisProcess
from tests.skips import cannot_run

pytestmark = pytest.mark.slow

#: What is not part of a source tree: never copied into the build.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", "*.egg-info", "build", "dist", "clients",
    ".*_cache", ".hypothesis", ".benchmarks", "results",
)  # fmt: skip


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(arg) for arg in args], capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "sessionsvc"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--outdir", out, source)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # setuptools names what it would have left out of the wheel; nothing may be.
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("sessionsvc-*-py3-none-any.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel installed, without extras."""
    home = tmp_path_factory.mktemp("venv") / "env"
    made = run(sys.executable, "-m", "venv", home)
    assert made.returncode == 0, made.stderr
    installed = run(home / "bin" / "pip", "install", "--quiet", wheel_of(dist))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return home


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the installed package is run: the mounting example and nothing of the repository."""
    shutil.copy(ROOT / "examples" / "host_app.py", tmp_path / "host_app.py")
    return tmp_path


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    # A server of the test's own: the example uses the default key prefix.
    if not shutil.which("redis-server"):
        cannot_run("redis-server is not on PATH: the installed package cannot be tried")
    server = RedisProcess().start()
    yield server
    server.stop()


def installed_env(**values: str) -> dict[str, str]:
    """A clean environment: no sessionsvc settings, no repository on the path."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SESSIONSVC_", "JWT_", "PYTHON", "VIRTUAL_ENV", "FLASK_"))
    }
    return {**env, **values}


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    checked = run(Path(sys.executable).parent / "twine", "check", "--strict", *dist.iterdir())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2


def test_the_wheel_carries_every_file_of_the_package_and_nothing_else(dist: Path) -> None:
    package = ROOT / "sessionsvc"
    tracked = run("git", "ls-files", "sessionsvc", cwd=ROOT)
    if tracked.returncode == 0 and tracked.stdout:
        files = {line for line in tracked.stdout.splitlines()}
    else:  # not a git checkout: what is on disk
        files = {
            str(path.relative_to(ROOT))
            for path in package.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = {name for name in wheel.namelist() if ".dist-info/" not in name}
        metadata = wheel.read(
            next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
        ).decode()
    assert names == files
    assert {"sessionsvc/store/scripts/open.lua", "sessionsvc/py.typed"} <= names
    # gunicorn -c python:sessionsvc.gunicorn_config: the settings that share
    # the embedded store among workers come with the wheel.
    assert "sessionsvc/gunicorn_config.py" in names
    # flask sessions audit upgrade runs the migrations from the installed package.
    assert {
        "sessionsvc/sql/migrations/env.py",
        "sessionsvc/sql/migrations/script.py.mako",
        "sessionsvc/sql/migrations/versions/v0001_audit_table.py",
    } <= names
    assert any(name.startswith("sessionsvc/templates/") for name in names)
    assert any(name.startswith("sessionsvc/static/docs/swagger-ui/") for name in names)
    assert "Provides-Extra: embedded" in metadata
    assert 'Requires-Dist: fakeredis[lua]>=2.26; extra == "embedded"' in metadata
    assert 'Requires-Dist: SQLAlchemy>=2.0.30; extra == "audit"' in metadata
    assert 'Requires-Dist: psycopg[binary]>=3.1; extra == "postgres"' in metadata
    # SQLAlchemy stays out of the base install.
    base = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert any(line.startswith("Requires-Dist: flask") for line in base)
    assert "Requires-Dist: hiredis>=3.0" in base
    assert not [line for line in base if "sqlalchemy" in line.lower() or "alembic" in line]


DRIVE_THE_EXAMPLE = textwrap.dedent(
    """
    import json, sys, sessionsvc, host_app
    from redis.utils import HIREDIS_AVAILABLE
    app = host_app.create_app()
    client = app.test_client()
    user = {"email": "ada@example.com", "password": "correct horse"}
    assert client.post("/signup", json=user).status_code == 201
    laptop = client.post("/login", json=user, headers={"User-Agent": "laptop"}).get_json()
    phone = client.post("/login", json=user, headers={"User-Agent": "phone"}).get_json()
    listed = client.get(
        "/api/v1/sessions", headers={"Authorization": "Bearer " + laptop["access_token"]}
    ).get_json()
    gone = client.delete(
        "/api/v1/sessions/" + phone["session_id"],
        headers={"Authorization": "Bearer " + laptop["access_token"]},
    ).status_code
    after = client.get(
        "/me", headers={"Authorization": "Bearer " + phone["access_token"]}
    ).get_json()
    print(json.dumps({
        "package": sessionsvc.__file__,
        "hiredis": HIREDIS_AVAILABLE,
        "sessions": sorted(s["id"] for s in listed["sessions"]),
        "expected": sorted([laptop["session_id"], phone["session_id"]]),
        "laptop": laptop["session_id"],
        "revoked": gone,
        "after": after["msg"],  # the host's route: flask-jwt-extended's answer
    }))
    """
)


def test_the_installed_wheel_runs_the_mounting_example_and_the_cli(
    venv: Path, workdir: Path, redis_server: RedisProcess
) -> None:
    env = installed_env(SESSIONSVC_REDIS_URL=redis_server.url, JWT_SECRET_KEY=JWT_KEY)
    driven = run(venv / "bin" / "python", "-c", DRIVE_THE_EXAMPLE, cwd=workdir, env=env)
    assert driven.returncode == 0, driven.stderr
    seen = json.loads(driven.stdout.strip().splitlines()[-1])
    assert seen["package"].startswith(str(venv)), seen["package"]
    # A plain install brings redis-py's compiled parser, and redis-py uses it.
    assert seen["hiredis"] is True
    assert seen["sessions"] == seen["expected"]
    assert (seen["revoked"], seen["after"]) == (204, "Token has been revoked")

    def flask(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [venv / "bin" / "flask", "--app", "host_app", "sessions", *args]
        return run(*command, cwd=workdir, env=env, input=stdin)

    # The host app's users are its own: no user-store commands.
    created = flask("create-user", "grace", "--password-stdin", stdin="a long passphrase\n")
    assert (created.returncode, "No such command 'create-user'" in created.stderr) == (2, True)
    # The example's own user (id 1) has the laptop's session left.
    listed = flask("list", "1", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)["sessions"]] == [seen["laptop"]]
    revoked = flask("revoke-all", "1")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(flask("list", "1", "--json").stdout) == {"sessions": []}
    unknown = flask("revoke", "1", "no-such-session")
    assert (unknown.returncode, unknown.stderr.count("\n")) == (1, 1)


def test_without_the_extra_it_says_so_and_with_it_runs_without_redis(
    venv: Path, dist: Path, workdir: Path
) -> None:
    """One test, in this order, since it adds the extra to the module's venv."""
    python = venv / "bin" / "python"
    assert run(python, "-c", "import fakeredis", cwd=workdir).returncode != 0
    for command in (
        [python, "-c", "import sessionsvc; sessionsvc.create_app()"],
        [venv / "bin" / "flask", "--app", "host_app", "sessions", "list", "1"],
    ):
        failed = run(*command, cwd=workdir, env=installed_env())
        assert failed.returncode != 0
        # The exception's message is the one line (Python prints its traceback).
        assert failed.stderr.strip().splitlines()[-1].endswith(NOT_INSTALLED), failed.stderr
        assert "ModuleNotFoundError" not in failed.stderr

    extra = f"sessionsvc[embedded] @ {wheel_of(dist).as_uri()}"
    added = run(venv / "bin" / "pip", "install", "--quiet", extra)
    assert added.returncode == 0, added.stdout + added.stderr
    driven = run(python, "-c", DRIVE_THE_EXAMPLE, cwd=workdir, env=installed_env())
    assert driven.returncode == 0, driven.stderr
    seen = json.loads(driven.stdout.strip().splitlines()[-1])
    assert seen["sessions"] == seen["expected"]
    assert seen["after"] == "Token has been revoked"
    assert "embedded development store" in driven.stderr

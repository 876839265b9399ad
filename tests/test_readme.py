"""The README's walkthrough, run as it stands against the service as `make run` starts it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, Gunicorn, free_port, service_env

pytestmark = pytest.mark.slow

README = ROOT / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S
    )
    assert match, "the README has no walkthrough block"
    return match.group(1)


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_run_command_is_make_run_and_serves_gunicorn() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "make run" in README.read_text()
    assert "$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app" in makefile


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
def test_walkthrough_works_verbatim() -> None:
    script = walkthrough()
    # The walkthrough talks to the port `make run` serves on; only when that
    # port is taken on this machine does the test move it, and it runs the
    # CLI from whatever environment runs the tests instead of .venv.
    port = 8000 if port_is_free(8000) else free_port()
    script = script.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    service = Gunicorn(service_env(), port=port, workers=2).start()
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=service_env(),
            timeout=120,
            check=False,
        )
    finally:
        service.stop()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "created user 'alice'" in out
    # The list shows two devices, the laptop as current.
    assert out.count('"current": true') == 1
    assert '"label": "Chrome 120 on Windows 10"' in out
    assert '"label": "Mobile Safari 17 on iOS 17.1"' in out
    lines = out.splitlines()
    assert "200" in lines
    assert "204" in lines
    assert '"code":"session_revoked"' in out
    assert out.count('"type": "session.created"') == 2
    assert '"reason": "user"' in out
    # Each device used its own tokens from its own browser: nothing else happened.
    assert out.count('"type": "session.') == 3
    assert out.count('"new_device"') == 2  # the phone's session and its created event

"""A real `scaleot-server serve` on loopback, as the HTTP benchmarks and the fuzzers start and stop it."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

CLI = [sys.executable, "-c", "from model_owner_server.cli import app; app()"]  # this interpreter's server CLI
START_TIMEOUT_S = 120  # a cold start imports torch and transformers and migrates the database


def wait_until_healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    """True once `url`'s /healthz answers 200; False when the server exits first or stays silent too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.3)
    return False


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains its requests and stops its workers), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

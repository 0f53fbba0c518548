"""Shared fixtures: a throw-away copy of the project, tiny CIFAR archives, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # snakemake, dvc, ... of the environment running the tests


def command_env(extra: dict | None = None) -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(extra or {})}


def run(cmd: list[str] | str, cwd: Path, check: bool = True, env: dict | None = None, timeout: int = 900):
    """Run a real command the way a user would; return the CompletedProcess (text output).

    The command gets its own process group, so a fault that kills its group spares pytest."""
    proc = subprocess.run(cmd, cwd=cwd, env=command_env(env), capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(cmd, str), start_new_session=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                             f"--- stderr\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(text: str) -> list[dict]:
    """Every job but `all` that the output of `snakemake -n -p` lists: rule, command, inputs,
    outputs, benchmark file, resources and reason, as Snakemake prints them."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text):
        rule = re.search(r"^(?:local)?rule (\S+):", block, re.M)
        if not rule or rule.group(1) == "all":
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        jobs.append({
            "rule": rule.group(1), "command": re.search(r"^Shell command: (.*)$", block, re.M).group(1),
            "inputs": set(fields.get("input", "").split(", ")) - {""}, "outputs": fields["output"].split(", "),
            "benchmark": fields.get("benchmark"),
            "resources": fields.get("resources", ""), "reason": fields.get("reason", ""),
            "threads": int(fields.get("threads", 1)),
        })
    return jobs


def snakemake_jobs(project: Path, *args: str) -> dict[str, dict]:
    """command -> job, for every job of a real dry run (--forceall)."""
    text = run(["snakemake", "-n", "-p", "--forceall", "all", *args], cwd=project).stdout
    return {job["command"]: job for job in planned_jobs(text)}


def layout(project: Path, *options: str):
    """Where a command run in `project` with these options (`--set`, `key=value`, ...) keeps its results."""
    from pipeline.dag import config, paths

    overrides = [o for o in options if o != "--set" and "=" in o]
    params = config.load(overrides, path=project / "params.yaml")
    return paths.Layout(params["profile"], config.configuration(params, path=project / "params.yaml"))


def copy_project(dest: Path, **params: str) -> Path:
    """The project's own files (tracked or new, not ignored) in a fresh git repo, as a clone has them.

    Keyword arguments replace top-level params.yaml values (YAML text), e.g. profile="ci".
    """
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params_file = dest / "params.yaml"
    text = params_file.read_text()
    for key, value in params.items():
        text, count = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, count=1, flags=re.M)
        assert count == 1, f"params.yaml has no top-level {key}"
    params_file.write_text(text)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path / "project")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served; yields (base_url, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


class _ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files with Range support, misbehaving as server.faults[name] says, one fault
    per request in order: "404", "500", "html", "stall" (answer late), "drop" (close mid-body),
    "wrong" (other bytes)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        self.server.requests.append((name, self.headers.get("Range")))
        queue = self.server.faults.get(name, [])
        fault = queue.pop(0) if queue else None
        data = self.server.files.get(name)
        if fault == "stall":
            time.sleep(self.server.stall_seconds)
        if fault in ("404", "500") or data is None:
            self.send_error(int(fault or 404))
            return
        if fault == "html":
            body = b"<html><body>Please log in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if fault == "wrong":
            data = bytes(b ^ 0xFF for b in data)
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        self.wfile.write(body[: len(body) // 2] if fault == "drop" else body)


@pytest.fixture
def archive_server():
    """A real HTTP server on 127.0.0.1 that misbehaves on request; yields the server object
    (set .files and .faults; read .requests) with .url as its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ArchiveHandler)
    server.files, server.faults, server.requests, server.stall_seconds = {}, {}, [], 2.0
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# ---- fault-injection bookkeeping: `pytest -m faults` ends with one summary line -------------
class OutputsLost(AssertionError):
    """A fault left a partial file under a final name, or destroyed an earlier good output."""


def assert_nothing_lost(*partial: Path, kept: tuple[Path, ...] = ()) -> None:
    """`partial` must not exist (nothing half-written under a final name); `kept` must still exist."""
    lost = [str(p) for p in partial if p.exists()] + [f"{p} (deleted)" for p in kept if not p.exists()]
    if lost:
        raise OutputsLost(f"outputs lost: {', '.join(lost)}")


def pytest_collection_modifyitems(items):
    """Everything end to end is slow too, so `pytest -m "not slow"` is the whole fast tier."""
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(pytest.mark.slow)


_FAULTS = {"tried": 0, "handled": 0, "lost": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" and "faults" in report.keywords:
        _FAULTS["tried"] += 1
        _FAULTS["handled"] += report.passed
        _FAULTS["lost"] += report.failed and "OutputsLost" in str(report.longrepr)


def pytest_terminal_summary(terminalreporter):
    if _FAULTS["tried"]:
        terminalreporter.write_line(
            f"faults: {_FAULTS['tried']} tried, {_FAULTS['handled']} handled, {_FAULTS['lost']} outputs lost")

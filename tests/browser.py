"""Headless Chromium for the report tests, driven through the DevTools protocol over a pipe (stdlib only).

`find_chromium()` returns Debian's `chromium`, installing it with apt-get when it is missing and the
tests run as root (as tests/cluster/ installs Slurm); the `chromium` fixture (tests/conftest.py)
skips only where neither is possible. `Browser(binary)` opens pages and reads what they render: the
text of the page after its scripts ran, and the text of the frames inside it (the Snakemake report
shows every result in an iframe).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PACKAGE = "chromium"  # Debian's package and binary


class BrowserUnavailable(RuntimeError):
    """No Chromium and no way to install it (not root, or no apt-get)."""


def find_chromium() -> str:
    """The Chromium binary; installed with apt-get when missing and running as root."""
    found = shutil.which(PACKAGE)
    if found:
        return found
    if os.geteuid() != 0:
        raise BrowserUnavailable(f"{PACKAGE} is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise BrowserUnavailable(f"{PACKAGE} is not installed and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE],
        check=True,
        env=env,
        capture_output=True,
    )
    found = shutil.which(PACKAGE)
    if not found:
        raise RuntimeError(f"apt-get installed {PACKAGE} but no `{PACKAGE}` binary is on PATH")
    return found


class Browser:
    """One headless Chromium; `open(url)` gives a `Page`. Close it (or use `with`)."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="semtok-chromium-")
        to_browser, self._write = os.pipe()  # Chromium reads commands on fd 3
        self._read, from_browser = os.pipe()  # and writes replies and events on fd 4

        def pipes_as_3_and_4() -> None:
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=pipes_as_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    # -- the protocol ----------------------------------------------------------------------------
    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (status {self._proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Run one DevTools command; returns its result, raises on a protocol error."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._receive(deadline))

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._write)
        os.close(self._read)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """A tab: evaluate scripts in it and read the text it renders, also inside its frames."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def evaluate(self, expression: str, context: int | None = None) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        params: dict[str, Any] = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context is not None:
            params["contextId"] = context
        result = self.browser.send("Runtime.evaluate", params, session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def text(self) -> str:
        """What the page shows: its body's rendered text."""
        return self.evaluate("document.body.innerText")

    def wait_for_frame_text(self, timeout: float = 30.0) -> str:
        """The rendered text of the page's one child frame, once it shows some."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = self.frame_texts()
            if len(texts) == 1 and texts[0].strip():
                return texts[0]
            time.sleep(0.1)
        raise TimeoutError(f"no frame with text after {timeout} s")

    def frame_texts(self) -> list[str]:
        """The rendered text of every child frame (e.g. a report's iframe holding a data: URL)."""
        tree = self.browser.send("Page.getFrameTree", session=self.session)["frameTree"]
        out = []
        for child in tree.get("childFrames", []):
            world = self.browser.send(
                "Page.createIsolatedWorld", {"frameId": child["frame"]["id"]}, session=self.session
            )
            out.append(
                self.evaluate("document.body ? document.body.innerText : ''", world["executionContextId"])
            )
        return out


def file_url(path: Path) -> str:
    return path.resolve().as_uri()

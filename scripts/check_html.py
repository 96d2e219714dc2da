"""Open HTML files in a real headless Chromium and fail on console errors; save screenshots.

    python scripts/check_html.py report.html heatmap.html --screenshots shots/
    python scripts/check_html.py --self-test          # shows that errors are caught

For each file: loads it from ``file://`` with the network switched off (DevTools
``Network.emulateNetworkConditions offline``), collects console messages (``Runtime.consoleAPICalled``),
uncaught exceptions (``Runtime.exceptionThrown``), browser log entries (``Log.entryAdded``: failed
loads, CSP and parser problems) and every network request other than the file itself, checks that the
page has no ``<script>`` and no external resource, and takes a full-page PNG screenshot. Exit status 1
if any file had a console error, an exception, an error log entry or an outside request; 2 if no
Chromium was found.

Talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so it needs nothing but the Python standard
library and a Chromium binary (``apt-get install chromium`` on Debian / Ubuntu; or ``--chromium PATH``).
Not part of the test suite (CI has no browser).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
              "headless_shell")


def find_chromium(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


class DevTools:
    """A minimal DevTools-protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900):
        self.user_dir = tempfile.mkdtemp(prefix="check_html_")
        cmd_r, self._cmd_w = os.pipe()        # we write commands, Chromium reads fd 3
        self._resp_r, resp_w = os.pipe()      # Chromium writes fd 4, we read

        def child_fds():
            a, b = os.dup(cmd_r), os.dup(resp_w)   # out of the way of 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)                          # dup2 targets are inheritable

        args = [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.user_dir}",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, close_fds=False, preexec_fn=child_fds)
        os.close(cmd_r)
        os.close(resp_w)
        self._id = 0
        self._replies: dict = {}
        self.events: "queue.Queue[dict]" = queue.Queue()
        self._cond = threading.Condition()
        self._stderr: list = []
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace"))

    def _reader(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._resp_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[None] = "closed"
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._id += 1
        mid = self._id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if None in self._replies:
                    raise RuntimeError(f"Chromium closed the DevTools pipe; stderr:\n{''.join(self._stderr)[-2000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method} in {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()             # only the process this script started
            self.proc.wait()
        os.close(self._cmd_w)
        shutil.rmtree(self.user_dir, ignore_errors=True)


PAGE_FACTS = """JSON.stringify({
  title: document.title,
  scripts: document.scripts.length,
  titled: document.querySelectorAll('[title]').length + document.querySelectorAll('svg title').length,
  svgs: document.querySelectorAll('svg').length,
  resources: performance.getEntriesByType('resource').map(e => e.name),
  height: document.documentElement.scrollHeight,
  width: document.documentElement.scrollWidth,
  firstHover: (document.querySelector('span[title]') || {}).title || null
})"""


def check_file(dt: DevTools, path: Path, shot: Path | None, width: int) -> dict:
    target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page", "Network"):
        dt.send(f"{domain}.enable", session=session)
    dt.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                 "uploadThroughput": -1}, session=session)
    url = path.resolve().as_uri()
    problems, notes, requests = [], [], []
    dt.send("Page.navigate", {"url": url}, session=session)
    loaded, deadline = False, time.monotonic() + 30
    settle_until = None
    while True:
        now = time.monotonic()
        if now > deadline:
            problems.append("timeout: the page did not finish loading in 30 s")
            break
        if settle_until is not None and now > settle_until:
            break
        try:
            ev = dt.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if ev.get("sessionId") not in (None, session):
            continue
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Page.loadEventFired" and not loaded:
            loaded = True
            settle_until = time.monotonic() + 0.7       # late messages after load
        elif m == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            (problems if p.get("type") in ("error", "assert") else notes).append(
                f"console.{p.get('type')}: {text}")
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            problems.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif m == "Log.entryAdded":
            e = p.get("entry", {})
            (problems if e.get("level") == "error" else notes).append(
                f"log.{e.get('level')} ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        elif m == "Network.requestWillBeSent":
            u = p.get("request", {}).get("url", "")
            if u != url and not u.startswith("data:"):
                requests.append(u)
    for u in requests:
        problems.append(f"request besides the page itself: {u}")
    facts = json.loads(dt.send("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True},
                               session=session)["result"]["value"])
    if facts["scripts"]:
        problems.append(f"{facts['scripts']} <script> element(s)")
    for r in facts["resources"]:
        problems.append(f"resource loaded: {r}")
    if shot is not None:
        height = max(300, min(int(facts["height"]), 16000))
        dt.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                       "deviceScaleFactor": 1, "mobile": False},
                session=session)
        png = dt.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                      session=session)["data"]
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(png))
    dt.send("Target.closeTarget", {"targetId": target})
    return {"file": str(path), "loaded": loaded, "problems": problems, "notes": notes, "facts": facts,
            "screenshot": str(shot) if shot else None}


def self_test(dt: DevTools, tmp: Path, width: int) -> bool:
    """A page with a console error, an exception and a missing image must be flagged; a clean one not."""
    bad = tmp / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body>"
                   "<img src=\"missing.png\"><img src=\"https://example.invalid/x.png\">"
                   "<script>console.error('deliberate'); undefinedFunction();</script></body></html>")
    good = tmp / "good.html"
    good.write_text("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>good</title></head>"
                    "<body><span title=\"hover\">ok</span></body></html>")
    rb, rg = check_file(dt, bad, None, width), check_file(dt, good, None, width)
    text = "\n".join(rb["problems"])
    caught = {"console.error": "deliberate" in text, "exception": "undefinedFunction" in text,
              "outside request": "https://example.invalid" in text, "script element": "<script>" in text}
    print(f"self-test: bad page -> {len(rb['problems'])} problem(s): " +
          ", ".join(f"{k} {'caught' if v else 'MISSED'}" for k, v in caught.items()))
    for p in rb["problems"]:
        print(f"    {p}")
    print(f"self-test: clean page -> {len(rg['problems'])} problem(s)")
    return all(caught.values()) and not rg["problems"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="HTML files to check")
    ap.add_argument("--screenshots", type=Path, default=None, metavar="DIR",
                    help="write a full-page PNG per file into DIR (NAME.png)")
    ap.add_argument("--chromium", default=None, help="path of the browser binary (default: search PATH)")
    ap.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default 1280)")
    ap.add_argument("--self-test", action="store_true",
                    help="first check that a page with deliberate errors is flagged")
    args = ap.parse_args(argv)
    if not args.files and not args.self_test:
        ap.error("give HTML files (or --self-test)")
    binary = find_chromium(args.chromium)
    if binary is None:
        print("check_html: no Chromium found (apt-get install chromium, or --chromium PATH)", file=sys.stderr)
        return 2
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"browser: {binary} ({version}), headless, network offline")
    dt = DevTools(binary, width=args.width)
    failed, used = False, set()
    try:
        if args.self_test:
            with tempfile.TemporaryDirectory() as tmp:
                if not self_test(dt, Path(tmp), args.width):
                    print("self-test FAILED: the checker does not catch what it should")
                    failed = True
        for f in args.files:
            if not f.exists():
                print(f"FAIL {f}: no such file")
                failed = True
                continue
            shot = None
            if args.screenshots:
                name = f.stem if f.stem not in used else f"{f.resolve().parent.name}-{f.stem}"
                used.add(name)
                shot = args.screenshots / (name + ".png")
            r = check_file(dt, f, shot, args.width)
            ok = r["loaded"] and not r["problems"]
            failed |= not ok
            fa = r["facts"]
            print(f"{'ok  ' if ok else 'FAIL'} {f}: title {fa['title']!r}, {fa['titled']} hover titles, "
                  f"{fa['svgs']} svg, {fa['scripts']} scripts, page {fa['width']}x{fa['height']} px, "
                  f"{len(r['problems'])} console errors/problems, {len(r['notes'])} other messages"
                  + (f"; screenshot {r['screenshot']}" if r["screenshot"] else ""))
            if fa["firstHover"]:
                print(f"     first hover text: {fa['firstHover']!r}")
            for p in r["problems"]:
                print(f"     problem: {p}")
            for n in r["notes"]:
                print(f"     note: {n}")
    finally:
        dt.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The real-browser check of the report: headless Chromium loads the page; every image must load and every
link resolve, and no page may make a request off the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import VaesaeError
from ..io import repo_path


# ---------------------------------------------------------------------------------------------
# the real-browser check

_MARKER = "vaesae-browser-check"
_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                   .map(function (i) { return i.getAttribute('src'); });
  var pre = document.createElement('pre');
  pre.id = '%s';
  pre.textContent = JSON.stringify({images: imgs.length, broken: broken});
  document.body.appendChild(pre);
});
</script>""" % _MARKER
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--dump-dom", "--virtual-time-budget=5000")


def find_chromium() -> str | None:
    """``$VAESAE_CHROMIUM``, else chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("VAESAE_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []   # (tag.attr, value)
        self.ids: set[str] = set()
        self.marker: str | None = None
        self._in_marker = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href") is not None:
            self.refs.append(("a", a["href"]))
        elif tag == "img" and a.get("src") is not None:
            self.refs.append(("img", a["src"]))
        elif tag == "link" and a.get("href") is not None:
            self.refs.append(("link", a["href"]))
        if tag == "pre" and a.get("id") == _MARKER:
            self._in_marker, self.marker = True, ""

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_marker = False

    def handle_data(self, data):
        if self._in_marker:
            self.marker += data


@dataclasses.dataclass
class BrowserCheck:
    """What headless Chromium saw when it loaded a report."""

    images: int                  # <img> elements in the loaded page
    broken_images: list[str]     # src of images that did not load (naturalWidth == 0)
    links: int                   # local links checked (a href, img src, link href)
    missing_targets: list[str]   # local hrefs/srcs whose file does not exist
    missing_anchors: list[str]   # "#id" links with no such id in the page
    external: list[str]          # http(s)/mailto links, not followed

    @property
    def ok(self) -> bool:
        return not (self.broken_images or self.missing_targets or self.missing_anchors)

    def summary(self) -> str:
        if self.ok:
            return f"browser check passed: {self.images} images loaded, {self.links} local links resolve"
        parts = []
        if self.broken_images:
            parts.append(f"images that did not load: {', '.join(self.broken_images)}")
        if self.missing_targets:
            parts.append(f"links to missing files: {', '.join(self.missing_targets)}")
        if self.missing_anchors:
            parts.append(f"links to missing anchors: {', '.join(self.missing_anchors)}")
        return "browser check failed: " + "; ".join(parts)


def dump_dom(page: Path, chromium: str | None = None, timeout: float = 60) -> str:
    """Load ``page`` in headless Chromium (fresh profile, no network) and return the DOM after load."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise VaesaeError("no Chromium found (install the 'chromium' package or set VAESAE_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="vaesae-chromium-") as profile_dir:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VaesaeError(f"Chromium did not finish loading {page} within {timeout:.0f} s") from None
    if proc.returncode != 0 or "<html" not in proc.stdout:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VaesaeError(f"Chromium failed on {page} (exit {proc.returncode}): {last}")
    return proc.stdout


def page_requests(page: str | Path, chromium: str | None = None, timeout: float = 60) -> list[str]:
    """The URLs that ``page`` asks for off the machine when headless Chromium loads it (issue 18: the report
    and every executed notebook's HTML must ask for none).

    Chromium runs with every host name resolving to nothing (so no request can leave even if one is made)
    and writes a network log (``--log-net-log``); the requests the page started are the URL requests
    whose network isolation key is the page's ``file://`` origin (Chromium's own background requests
    carry another). Returns their URLs, sorted, except ``file:``, ``data:`` and ``blob:`` ones."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise VaesaeError("no Chromium found (install the 'chromium' package or set VAESAE_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="vaesae-chromium-") as tmp:
        log = Path(tmp) / "net.json"
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", f"--log-net-log={log}",
               "--host-resolver-rules=MAP * ~NOTFOUND", Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VaesaeError(f"Chromium did not finish loading {page} within {timeout:.0f} s") from None
        if proc.returncode != 0 or not log.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise VaesaeError(f"Chromium failed on {page} (exit {proc.returncode}): {last}")
        text = log.read_text(errors="replace")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:   # a log cut short at exit: close the events list
            data = json.loads(text.rstrip().rstrip(",") + "]}")
    start = {v: k for k, v in data.get("constants", {}).get("logEventTypes", {}).items()}
    urls = set()
    for event in data.get("events", []):
        params = event.get("params") or {}
        if start.get(event.get("type")) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        if "file://" not in str(params.get("network_isolation_key", "")) + str(params.get("site_for_cookies", "")):
            continue   # one of Chromium's own requests, not the page's
        if urlsplit(params["url"]).scheme not in ("file", "data", "blob"):
            urls.add(params["url"])
    return sorted(urls)


def browser_check(report: str | Path, chromium: str | None = None, timeout: float = 60) -> BrowserCheck:
    """Load a copy of ``report`` (with a probe script, in the same folder) in headless Chromium.

    After the window's load event the probe lists the images whose ``naturalWidth`` is 0; the
    dumped DOM's links are resolved against the report's folder and checked to exist.
    """
    report = repo_path(report).resolve()
    text = report.read_text(encoding="utf-8")
    probed = text.replace("</body>", _CHECK_SCRIPT + "\n</body>", 1) if "</body>" in text else text + _CHECK_SCRIPT
    fd, tmp = tempfile.mkstemp(prefix=f".{report.stem}.check-", suffix=".html", dir=report.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(probed)
        dom = dump_dom(Path(tmp), chromium, timeout)
    finally:
        Path(tmp).unlink(missing_ok=True)
    parser = _Links()
    parser.feed(dom)
    if parser.marker is None:
        raise VaesaeError(f"the page {report} did not finish loading in Chromium (no load event within the time budget)")
    probe = json.loads(parser.marker)
    missing, anchors, external, local = [], [], [], 0
    for _tag, ref in parser.refs:
        parts = urlsplit(ref)
        if parts.scheme in ("http", "https", "mailto"):
            external.append(ref)
            continue
        if parts.scheme == "file":
            target = Path(unquote(parts.path))
        elif parts.scheme:
            missing.append(ref)  # data:, javascript: ... have no place in the report
            continue
        elif not parts.path:
            if parts.fragment and parts.fragment not in parser.ids:
                anchors.append(ref)
            continue
        else:
            target = report.parent / unquote(parts.path)
        local += 1
        if not target.exists():
            missing.append(ref)
    return BrowserCheck(images=int(probe["images"]), broken_images=list(probe["broken"]), links=local,
                        missing_targets=sorted(set(missing)), missing_anchors=sorted(set(anchors)),
                        external=sorted(set(external)))

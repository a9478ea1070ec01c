"""What a build needs, checked: ``mipkit doctor`` prints it, and every build runs it at start.

Each check gives the part, ok / missing / warning / absent, its version and the fix. Cookies and
the proxy are checked without printing them: a cookies file shows only how many cookies it holds
and how many have expired, the proxy only whether it answers.
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import importlib.metadata
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mipkit.core.errors import MipkitError
from mipkit.media.runtimes import RUNTIME_FIX, find_js_runtimes

OK, MISSING, WARNING, ABSENT = "ok", "missing", "warning", "not installed"
YTDLP_MAX_AGE_DAYS = 90
YTDLP_FIX = "pip install -U 'yt-dlp[default]'"
POT_FIX = "optional, for YouTube at scale: pip install 'mipkit[youtube]', then run bgutil's PO-token server"


@dataclass(frozen=True)
class Check:
    part: str
    state: str
    version: str = ""
    fix: str = ""
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.required and self.state == MISSING


def _tool_version(executable: str, search_path: str | None) -> Check:
    path = shutil.which(executable, path=search_path)
    fix = "apt-get install ffmpeg (Debian/Ubuntu), or put ffmpeg and ffprobe on PATH"
    if not path:
        return Check(executable, MISSING, fix=fix)
    try:
        first = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return Check(executable, MISSING, fix=fix)
    match = re.search(rf"{executable} version (\S+)", first)
    return Check(executable, OK, match.group(1) if match else "unknown")


def ytdlp_check(version: str | None = None, today: dt.date | None = None) -> Check:
    """yt-dlp is dated by its version (YYYY.MM.DD); YouTube breaks releases older than about 90 days."""
    if version is None:
        try:
            from yt_dlp.version import __version__ as version
        except ImportError:
            return Check("yt-dlp", MISSING, fix=YTDLP_FIX)
    match = re.match(r"(\d{4})\.(\d{1,2})\.(\d{1,2})", version)
    if not match:
        return Check("yt-dlp", WARNING, version, f"release date unknown; {YTDLP_FIX}")
    age = ((today or dt.date.today()) - dt.date(*map(int, match.groups()))).days
    if age > YTDLP_MAX_AGE_DAYS:
        return Check("yt-dlp", WARNING, version, f"{age} days old, YouTube often breaks old releases: {YTDLP_FIX}")
    return Check("yt-dlp", OK, version)


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def js_runtime_check(search_path: str | None = None, packaged: bool = True) -> Check:
    runtimes = find_js_runtimes(search_path, packaged)
    usable = next((r for r in runtimes if r.supported), None)
    if usable is not None:
        where = "PyPI deno package" if usable.packaged else "on PATH"
        return Check("JavaScript runtime", OK, f"{usable.name} {usable.version} ({where})")
    if runtimes:
        seen = ", ".join(f"{r.name} {r.version}" for r in runtimes)
        return Check("JavaScript runtime", MISSING, f"{seen}: too old for yt-dlp", RUNTIME_FIX)
    return Check("JavaScript runtime", MISSING, fix=RUNTIME_FIX)


def pot_provider_check() -> Check:
    """A PO-token provider plugin is optional: yt-dlp loads it from the ``yt_dlp_plugins`` namespace package."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("yt_dlp_plugins")
    except (ImportError, ValueError):
        spec = None
    if spec is None:  # the usual case, answered without scanning every installed distribution
        return Check("PO-token provider", ABSENT, fix=POT_FIX, required=False)
    owners = importlib.metadata.packages_distributions().get("yt_dlp_plugins", [])
    found = sorted(
        {f"{name} {_distribution_version(name)}" for name in owners if re.search(r"pot|po.?token", name, re.IGNORECASE)}
    )
    if found:
        return Check("PO-token provider", OK, ", ".join(found), required=False)
    return Check("PO-token provider", ABSENT, fix=POT_FIX, required=False)


def cookies_file_check(path: Path) -> Check:
    """Parse a Netscape cookies file: how many cookies, how many expired; never a value."""
    path = Path(path)
    part = "cookies file"
    if not path.is_file():
        return Check(part, MISSING, fix=f"{path.name!r} does not exist; export cookies in Netscape format")
    jar = http.cookiejar.MozillaCookieJar()
    try:
        jar.load(str(path), ignore_discard=True, ignore_expires=True)
    except (http.cookiejar.LoadError, OSError, UnicodeDecodeError):
        return Check(
            part,
            MISSING,
            fix=f"{path.name!r} is not a Netscape cookies file; export it again (e.g. a cookies.txt browser extension)",
        )
    return _cookie_counts(part, list(jar))


def _cookie_counts(part: str, cookies: list) -> Check:
    now = time.time()
    expired = sum(1 for c in cookies if c.expires is not None and 0 < c.expires < now)
    version = f"{len(cookies)} cookies, {expired} expired"
    if not cookies:
        return Check(part, MISSING, version, "it holds no cookie; export the cookies of a signed-in session again")
    if expired == len(cookies):
        return Check(part, WARNING, version, "every cookie has expired; export them again from a signed-in browser")
    return Check(part, OK, version)


def cookies_from_browser_spec(value: str) -> tuple[str, str | None, None, None]:
    """``BROWSER[:PROFILE]`` as yt-dlp's ``cookiesfrombrowser`` tuple (browser, profile, keyring, container)."""
    browser, _, profile = value.partition(":")
    return browser.strip().lower(), profile or None, None, None


def browser_cookies_check(spec: str) -> Check:
    """Load the browser's cookies the way yt-dlp will; report counts only (the profile is not shown)."""
    from yt_dlp.cookies import SUPPORTED_BROWSERS, extract_cookies_from_browser

    browser, profile, _, _ = cookies_from_browser_spec(spec)
    part = "browser cookies"
    if browser not in SUPPORTED_BROWSERS:
        return Check(part, MISSING, browser, f"unknown browser; choose one of {', '.join(sorted(SUPPORTED_BROWSERS))}")
    try:
        jar = extract_cookies_from_browser(browser, profile, logger=_QuietLogger())
    except Exception as exc:  # noqa: BLE001 - a locked, missing or encrypted store: say so, without its path
        return Check(
            part,
            MISSING,
            browser,
            f"could not read {browser}'s cookies ({type(exc).__name__}); "
            "close the browser, check the profile name, or export a cookies file for --cookies",
        )
    check = _cookie_counts(part, list(jar))
    return Check(check.part, check.state, f"{browser}: {check.version}", check.fix)


class _QuietLogger:
    def debug(self, msg: str) -> None: ...
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str, only_once: bool = False) -> None: ...
    def error(self, msg: str) -> None: ...


def proxy_check(proxy: str, timeout_s: float = 5.0) -> Check:
    """Whether the proxy's host:port accepts a connection. Only the scheme is shown."""
    part = "proxy"
    try:
        parsed = urlparse(proxy if "//" in proxy else f"http://{proxy}")
        host, port = (
            parsed.hostname,
            parsed.port or {"https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}.get(parsed.scheme, 80),
        )
    except ValueError:
        return Check(part, MISSING, fix="not a proxy URL; pass scheme://[user:password@]host:port")
    if not host:
        return Check(part, MISSING, fix="not a proxy URL; pass scheme://[user:password@]host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError:
        return Check(
            part, MISSING, parsed.scheme, "not reachable; check that it runs and that this machine may reach it"
        )
    return Check(part, OK, f"{parsed.scheme}, reachable")


def run_checks(
    cookies: Path | None = None,
    proxy: str | None = None,
    cookies_from_browser: str | None = None,
    youtube: bool = True,
    search_path: str | None = None,
    packaged_runtime: bool = True,
    optional: bool = True,
) -> list[Check]:
    """Every check, in table order. ``youtube=False`` makes the YouTube parts informative only;
    ``optional=False`` leaves out what is only informative (the PO-token plugin)."""
    checks = [_tool_version("ffmpeg", search_path), _tool_version("ffprobe", search_path), ytdlp_check()]
    ejs = _distribution_version("yt-dlp-ejs")
    checks.append(
        Check("yt-dlp-ejs", OK, ejs) if ejs else Check("yt-dlp-ejs", MISSING, fix=YTDLP_FIX, required=youtube)
    )
    runtime = js_runtime_check(search_path, packaged_runtime)
    checks.append(Check(runtime.part, runtime.state, runtime.version, runtime.fix, required=youtube))
    if optional:
        checks.append(pot_provider_check())
    if cookies is not None:
        checks.append(cookies_file_check(cookies))
    if cookies_from_browser:
        checks.append(browser_cookies_check(cookies_from_browser))
    if proxy:
        checks.append(proxy_check(proxy))
    return checks


def _raise_failed(checks: list[Check]) -> None:
    failed = [c for c in checks if c.failed]
    if failed:
        what = "; ".join(
            f"{c.part} {c.state}" + (f" ({c.version})" if c.version else "") + f": {c.fix}" for c in failed
        )
        raise MipkitError(f"{what} (see `mipkit doctor`)")


def preflight(cookies: str = "", proxy: str = "", cookies_from_browser: str = "") -> list[Check]:
    """The build's start: a required part missing is a one-line error with its fix; the warnings come back.

    The YouTube parts are informative here; ``require_youtube_support`` makes them required."""
    checks = run_checks(
        Path(cookies) if cookies else None, proxy or None, cookies_from_browser or None, youtube=False, optional=False
    )
    _raise_failed(checks)
    return [c for c in checks if c.state == WARNING]


def require_youtube_support() -> None:
    """Without yt-dlp-ejs and a JavaScript runtime every YouTube sample would end as download_error."""
    ejs = _distribution_version("yt-dlp-ejs")
    _raise_failed(
        [Check("yt-dlp-ejs", OK, ejs) if ejs else Check("yt-dlp-ejs", MISSING, fix=YTDLP_FIX), js_runtime_check()]
    )

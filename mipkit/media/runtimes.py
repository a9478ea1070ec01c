"""The JavaScript runtime yt-dlp needs for YouTube's player challenges: found here, passed to yt-dlp by path.

The PyPI ``deno`` package (a dependency) ships the deno binary inside the environment, so a fresh
set-up needs no manual step; a runtime on PATH (deno, node, bun, quickjs) is the fallback. yt-dlp's
own runtime classes say which version each one is and whether yt-dlp supports it.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass

# yt-dlp's runtime names, in its order of preference, with the executable each runs as.
JS_RUNTIMES = (("deno", "deno"), ("node", "node"), ("bun", "bun"), ("quickjs", "qjs"))
RUNTIME_FIX = "pip install deno (mipkit's set-up does), or put deno >= 2.3, node >= 22, bun or quickjs on PATH"


@dataclass(frozen=True)
class JsRuntime:
    name: str
    path: str
    version: str
    supported: bool
    packaged: bool  # the PyPI deno package, not a PATH executable


def packaged_deno() -> str | None:
    """Path of the deno binary the PyPI ``deno`` package installed, if any."""
    try:
        import deno
    except ImportError:
        return None
    try:
        return deno.find_deno_bin()
    except (FileNotFoundError, OSError):
        return None


def _describe(name: str, path: str, packaged: bool) -> JsRuntime:
    try:
        from yt_dlp.globals import supported_js_runtimes

        info = supported_js_runtimes.value[name](path=path).info
    except Exception:  # noqa: BLE001 - an older yt-dlp without runtime classes: trust the executable
        info = None
    if info is None:
        return JsRuntime(name, path, "unknown", supported=False, packaged=packaged)
    return JsRuntime(name, path, info.version, supported=bool(info.supported), packaged=packaged)


def find_js_runtimes(search_path: str | None = None, packaged: bool = True) -> list[JsRuntime]:
    """Every runtime found: the packaged deno first, then PATH (``search_path`` overrides ``$PATH``)."""
    found = []
    deno_path = packaged_deno() if packaged else None
    if deno_path:
        found.append(_describe("deno", deno_path, packaged=True))
    for name, executable in JS_RUNTIMES:
        path = shutil.which(executable, path=search_path)
        if path and not any(os.path.realpath(r.path) == os.path.realpath(path) for r in found):
            found.append(_describe(name, path, packaged=False))
    return found


def best_js_runtime(search_path: str | None = None, packaged: bool = True) -> JsRuntime | None:
    """The first runtime yt-dlp supports, else None."""
    return next((r for r in find_js_runtimes(search_path, packaged) if r.supported), None)


@functools.lru_cache(maxsize=8)
def _param_for(path_env: str | None) -> tuple[str, str] | None:
    runtime = best_js_runtime(path_env)
    return (runtime.name, runtime.path) if runtime else None


def js_runtime_param() -> dict | None:
    """yt-dlp's ``js_runtimes`` value for the best runtime here (cached per ``$PATH``), or None."""
    found = _param_for(os.environ.get("PATH"))
    return {found[0]: {"path": found[1]}} if found else None

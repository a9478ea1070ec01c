"""The fault-injecting media server itself, against plain http.client (fast: no media tools)."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from mipkit.demo.faultserver import (
    CloseMidBody,
    FaultServer,
    HttpError,
    IgnoreRange,
    ShortContentLength,
    StallBeforeHeaders,
    StallMidBody,
    Throttle,
    file_scheme_page,
)

BODY = bytes(range(256)) * 1024  # 256 KiB whose bytes say where they are


@pytest.fixture
def server(tmp_path):
    (tmp_path / "blob.bin").write_bytes(BODY)
    with FaultServer(tmp_path, max_stall_s=5) as served:
        yield served


def _get(url: str, headers: dict | None = None, timeout: float = 10.0):
    """(status, headers, body, error): body is what arrived before any connection error."""
    parts = url.split("/", 3)
    conn = http.client.HTTPConnection(parts[2].split(":")[0], int(parts[2].split(":")[1]), timeout=timeout)
    conn.request("GET", "/" + parts[3], headers=headers or {})
    response = conn.getresponse()
    body, error = b"", None
    try:
        body = response.read()
    except http.client.IncompleteRead as exc:
        body, error = exc.partial, exc
    except (TimeoutError, ConnectionError) as exc:
        error = exc
    conn.close()
    return response.status, dict(response.getheaders()), body, error


def test_default_behaviour_is_the_media_server(server):
    status, headers, body, error = _get(server.url("blob.bin"), {"Range": "bytes=1000-1999"})
    assert (status, headers["Content-Range"], body, error) == (
        206,
        f"bytes 1000-1999/{len(BODY)}",
        BODY[1000:2000],
        None,
    )
    assert headers["Accept-Ranges"] == "bytes"
    status, _, body, _ = _get(server.url("blob.bin"))
    assert status == 200 and body == BODY
    assert _get(server.url("missing.bin"))[0] == 404
    assert server.bytes_sent == 1000 + len(BODY)
    first, second, missing = server.log
    assert (first.method, first.range, first.status, first.body_bytes) == ("GET", "bytes=1000-1999", 206, 1000)
    assert second.status == 200 and missing.status == 404 and first.t <= second.t <= missing.t
    assert first.client.startswith("127.0.0.1:") and first.faults == ()


def test_an_alias_url_carries_its_faults_and_the_plain_url_stays_clean(server):
    cut = server.url("blob.bin", CloseMidBody(after_bytes=10_000))
    assert cut != server.url("blob.bin") and cut.endswith("/blob.bin")
    status, _, body, error = _get(cut)
    assert status == 200 and body == BODY[:10_000] and isinstance(error, http.client.IncompleteRead)
    assert _get(server.url("blob.bin"))[2] == BODY
    assert [r.faults for r in server.log] == [("CloseMidBody",), ()]
    assert len(server.requests_for(cut)) == 1
    fresh = server.url("blob.bin", fresh=True)
    assert (
        fresh not in (cut, server.url("blob.bin")) and _get(fresh)[2] == BODY and len(server.requests_for(fresh)) == 1
    )


def test_a_cut_past_the_end_of_a_short_answer_does_not_count_as_fired(server):
    cut = server.url("blob.bin", CloseMidBody(after_bytes=10_000, times=1))
    assert _get(cut, {"Range": "bytes=0-99"})[3] is None  # shorter than the cut point: untouched
    assert _get(cut)[3] is not None  # the one cut
    assert _get(cut)[2] == BODY  # times=1: then clean


def test_stall_before_headers_holds_the_status_line(server):
    url = server.url("blob.bin", StallBeforeHeaders(seconds=1.0))
    started = time.monotonic()
    status, _, body, _ = _get(url)
    assert time.monotonic() - started >= 0.9 and status == 200 and body == BODY
    with pytest.raises(socket.timeout):
        _get(url, timeout=0.3)


@pytest.mark.parametrize("then_close", [False, True])
def test_stall_mid_body_then_resume_or_close(server, then_close):
    url = server.url("blob.bin", StallMidBody(after_bytes=50_000, seconds=0.8, then_close=then_close))
    started = time.monotonic()
    status, _, body, error = _get(url)
    assert status == 200 and time.monotonic() - started >= 0.7
    if then_close:
        assert body == BODY[:50_000] and isinstance(error, http.client.IncompleteRead)
    else:
        assert body == BODY and error is None
    # a reader with a read timeout notices the stall
    assert isinstance(
        _get(server.url("blob.bin", StallMidBody(after_bytes=1000, seconds=3)), timeout=0.3)[3], socket.timeout
    )


def test_short_content_length_truncates_what_a_client_reads(server):
    status, headers, body, _ = _get(server.url("blob.bin", ShortContentLength(fraction=0.25)), {"Range": "bytes=0-"})
    assert status == 206 and int(headers["Content-Length"]) == len(BODY) // 4 and body == BODY[: len(BODY) // 4]
    assert headers["Content-Range"] == f"bytes 0-{len(BODY) - 1}/{len(BODY)}"
    assert _settled(server, lambda sent: sent == len(BODY) // 4)  # the answer is silently truncated
    _get(server.url("blob.bin", ShortContentLength(fraction=0.25, send_all=True)))
    assert _settled(server, lambda sent: sent > len(BODY) // 4)  # more than declared (the client hangs up early)


def _settled(server, condition, within_s: float = 5.0) -> bool:
    """Whether the last request's byte count meets ``condition`` once its handler thread has caught up:
    the client may finish reading before the server thread records what it wrote."""
    deadline = time.monotonic() + within_s
    while not condition(server.log[-1].body_bytes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_intermittent_errors_and_retry_after(server):
    flaky = server.url("blob.bin", HttpError(status=500, every=2))
    assert [_get(flaky)[0] for _ in range(4)] == [500, 200, 500, 200]
    burst = server.url("blob.bin", HttpError(status=429, times=2, retry_after=7))
    answers = [_get(burst) for _ in range(3)]
    assert [a[0] for a in answers] == [429, 429, 200] and answers[0][1]["Retry-After"] == "7"
    later = server.url("blob.bin", HttpError(status=503, skip_requests=1, times=1))
    assert [_get(later)[0] for _ in range(3)] == [200, 503, 200]
    for code in (502, 504):
        assert _get(server.url("blob.bin", HttpError(status=code)))[0] == code


def test_a_storm_on_every_path_until_it_is_switched_off(server):
    server.set_fault("*", HttpError(status=429, retry_after=1))
    assert {_get(server.url("blob.bin"))[0], _get(server.url("other.bin"))[0]} == {429}
    server.clear_faults("*")
    assert _get(server.url("blob.bin"))[0] == 200


def test_throttle_limits_range_answers_only(server):
    url = server.url("blob.bin", Throttle(bytes_per_s=100_000))
    started = time.monotonic()
    assert _get(url, {"Range": "bytes=0-49999"})[2] == BODY[:50_000]
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert (
        _get(url)[2] == BODY and time.monotonic() - started < 1.5
    )  # a plain GET is not throttled (it would take 2.6 s)


def test_ignore_range_answers_the_whole_body_without_accept_ranges(server):
    status, headers, body, _ = _get(server.url("blob.bin", IgnoreRange()), {"Range": "bytes=1000-1999"})
    assert status == 200 and body == BODY and "Accept-Ranges" not in headers and "Content-Range" not in headers


def test_pages_are_served_from_memory(server):
    url = server.add_page("watch.html", file_scheme_page("/etc/hostname"))
    status, headers, body, _ = _get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<video src="file:///etc/hostname"' in body and b'og:video" content="file:///etc/hostname"' in body


def test_stop_is_prompt_with_stalled_and_unread_handlers(tmp_path):
    (tmp_path / "blob.bin").write_bytes(BODY * 8)
    server = FaultServer(tmp_path, max_stall_s=60).start()
    stalled = server.url("blob.bin", StallBeforeHeaders(seconds=60))
    slow = server.url("blob.bin", Throttle(bytes_per_s=1000, range_only=False))
    outcomes = []

    def fetch(url):
        try:
            outcomes.append(_get(url, timeout=30)[3])
        except OSError as exc:  # the stalled one: closed before a status line
            outcomes.append(exc)

    clients = [threading.Thread(target=fetch, args=(u,), daemon=True) for u in (stalled, slow)]
    unread = socket.create_connection(server.server_address)  # asks for a body and never reads it
    unread.sendall(b"GET /blob.bin HTTP/1.0\r\n\r\n")
    for client in clients:
        client.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    for client in clients:
        client.join(5)
        assert not client.is_alive()
    assert len(outcomes) == 2 and all(outcome is not None for outcome in outcomes)  # both cut, neither completed
    unread.close()


def test_one_fault_of_each_kind_per_rule(server):
    with pytest.raises(ValueError):
        server.set_fault("*", HttpError(status=500), HttpError(status=503))

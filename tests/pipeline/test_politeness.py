"""Per-host politeness as recipe data, and the host gate that every thread and process of a machine shares."""

from __future__ import annotations

import itertools
import multiprocessing
import time

import pytest

from mipkit.config.politeness import YOUTUBE_SAFE, HostPoliteness, Politeness, canonical_host
from mipkit.core.errors import MipkitError
from mipkit.pipeline.politeness import HostGate, SessionBlocked


@pytest.mark.parametrize(
    "url, host",
    [
        ("https://www.youtube.com/watch?v=abcdefghijk", "youtube.com"),
        ("https://youtu.be/abcdefghijk", "youtube.com"),
        ("https://rr3---sn-abc.googlevideo.com/videoplayback?x=1", "youtube.com"),
        ("https://music.youtube.com/watch?v=abcdefghijk", "youtube.com"),
        ("http://127.0.0.1:8123/src0.mp4", "127.0.0.1"),
        ("https://WWW.Example.org/a.mp4", "example.org"),
        ("youtu.be", "youtube.com"),
    ],
)
def test_every_youtube_domain_is_one_session_host(url, host):
    assert canonical_host(url) == host


def test_youtube_gets_the_safe_defaults_and_other_hosts_get_default():
    settings = Politeness.from_raw({"default": {"min_interval_s": 1.5}})
    assert settings.for_url("https://youtu.be/abcdefghijk") == YOUTUBE_SAFE
    assert (
        YOUTUBE_SAFE.min_interval_s == 6.0
        and YOUTUBE_SAFE.max_per_hour == 300
        and YOUTUBE_SAFE.sleep_requests_s == 0.75
    )
    assert settings.for_url("http://media.example.org/a.mp4").min_interval_s == 1.5
    listed = Politeness.from_raw({"example.org": {"max_per_hour": 10}})
    assert listed.for_url("https://cdn.example.org/a.mp4").max_per_hour == 10  # a listed parent domain covers its hosts


def test_the_recipe_toml_and_the_flag_set_politeness(tmp_path):
    from mipkit.config.recipe import load_recipe

    recipe = load_recipe("mipnet")
    assert recipe.politeness.for_url("https://www.youtube.com/watch?v=abcdefghijk") == YOUTUBE_SAFE
    changed = recipe.politeness.with_override("youtu.be:min_interval_s=10").with_override("127.0.0.1:breaker_after=2")
    assert changed.for_url("https://www.youtube.com/watch?v=abcdefghijk").min_interval_s == 10.0
    assert changed.for_url("https://www.youtube.com/watch?v=abcdefghijk").jitter_s == 4.0  # the rest stays
    assert changed.for_url("http://127.0.0.1:9/a.mp4").breaker_after == 2
    own = tmp_path / "polite.toml"
    own.write_text('[politeness."example.org"]\nmin_interval_s = 2\nmax_per_hour = 5\n')
    assert load_recipe(str(own)).politeness.for_host("example.org") == HostPoliteness(
        min_interval_s=2.0, max_per_hour=5
    )


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"default": {"min_interval": 1}}, r"unknown keys \['min_interval'\]"),
        ({"youtube.com": {"min_interval_s": -1}}, "min_interval_s must be >= 0"),
        ({"default": {"max_per_hour": 2.5}}, "max_per_hour must be a whole number"),
        ({"default": {"breaker_after": 0}}, "breaker_after must be >= 1"),
        ({"default": 3}, "expected a table"),
    ],
)
def test_bad_politeness_is_one_line_naming_the_key(raw, message):
    with pytest.raises(MipkitError, match=message):
        Politeness.from_raw(raw)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("youtube.com", "expected HOST:key=value"),
        ("youtube.com:speed=3", "unknown key 'speed'"),
        ("youtube.com:min_interval_s=fast", "min_interval_s must be a number"),
    ],
)
def test_bad_politeness_flag_is_one_line(spec, message):
    with pytest.raises(MipkitError, match=message):
        Politeness().with_override(spec)


def _starts(state_dir: str, interval: float, count: int, results) -> None:
    gate = HostGate(state_dir, Politeness().with_override(f"127.0.0.1:min_interval_s={interval}"))
    for _ in range(count):
        gate.start_source("http://127.0.0.1:1/x.mp4")
        results.put(time.time())


def test_min_interval_holds_across_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_starts, args=(str(tmp_path), 0.3, 3, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len([results.get(timeout=5) for _ in range(6)]) == 6
    # The gate's own record of each start, taken under the lock (the processes' clocks are one clock).
    starts = sorted(HostGate(tmp_path, Politeness())._update(lambda s: s)["127.0.0.1"]["starts"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 6 and min(gaps) >= 0.3, gaps


def test_max_per_hour_makes_the_next_start_wait(tmp_path):
    gate = HostGate(tmp_path, Politeness().with_override("127.0.0.1:max_per_hour=2"))
    gate.start_source("http://127.0.0.1/a")
    gate.start_source("http://127.0.0.1/b")
    state = gate._update(lambda s: s)
    state["127.0.0.1"]["starts"][0] -= 3600 - 0.4  # the first start is almost an hour old
    gate._update(lambda s: s.update(state))
    began = time.time()
    gate.start_source("http://127.0.0.1/c")
    assert 0.3 <= time.time() - began < 3


def test_rate_limits_back_off_exponentially_then_trip_the_breaker(tmp_path):
    settings = Politeness().with_override("127.0.0.1:backoff_initial_s=10").with_override("127.0.0.1:backoff_max_s=25")
    gate = HostGate(tmp_path, settings.with_override("127.0.0.1:breaker_after=4"))
    url = "http://127.0.0.1/a"
    pauses = []
    for _ in range(3):
        before = time.time()
        assert gate.rate_limited(url) is False
        pauses.append(gate._update(lambda s: s["127.0.0.1"]["paused_until"]) - before)
    assert 8 <= pauses[0] <= 10.1 and 16 <= pauses[1] <= 20.1 and 20 <= pauses[2] <= 25.1  # doubling, jittered, capped
    gate.answered(url)  # an answer ends the run of rate limits
    for _ in range(3):
        assert gate.rate_limited(url) is False
    assert gate.rate_limited(url) is True
    with pytest.raises(SessionBlocked):
        gate.start_source(url)
    gate.start_source("http://other.example/a")  # other hosts go on
    assert HostGate(tmp_path, settings).reset_breakers() == ["127.0.0.1"]
    assert not gate.is_tripped(url)


def test_retry_after_is_honoured_and_pauses_every_worker(tmp_path):
    gate = HostGate(tmp_path, Politeness())
    gate.rate_limited("http://127.0.0.1/a", retry_after=0.6)  # default back-off would be 60 s
    other_worker = HostGate(tmp_path, Politeness())
    began = time.time()
    other_worker.wait_clear("http://127.0.0.1/b")
    assert 0.5 <= time.time() - began < 3

"""Configuration is validated before any work, with one-line errors (issue 11, item 10).

Every recipe case edits one key of a shipped recipe (mipnet, audioset-mood, yt8m-*), so the table
says exactly which value is refused and why; the command-line cases run the real ``mipkit``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mipkit.config.recipe import check_cookies_file, load_recipe
from mipkit.core.errors import MipkitError
from mipkit.core.paths import recipe_dir

NETSCAPE = "# Netscape HTTP Cookie File\n.example.com\tTRUE\t/\tTRUE\t0\tSID\tsecret-value\n"


def _edit(recipe: str, section: str, key: str, value: str | None) -> str:
    """The recipe's TOML with ``key`` of ``[section]`` set to ``value`` (a TOML literal; None removes it)."""
    text = (recipe_dir() / f"{recipe}.toml").read_text(encoding="utf-8")
    head, marker, tail = text.partition(f"[{section}]\n")
    if not marker:
        return text + f"\n[{section}]\n{key} = {value}\n"
    tail = re.sub(rf"(?m)^{key}\s*=.*\n", "", tail, count=1)
    return head + marker + ("" if value is None else f"{key} = {value}\n") + tail


# (recipe, section, key, TOML value, words the one-line error must contain)
BAD_VALUES = [
    ("mipnet", "clip", "seconds", '"ten"', "[clip] seconds"),
    ("mipnet", "clip", "seconds", "nan", "[clip] seconds"),
    ("mipnet", "clip", "seconds", "inf", "[clip] seconds"),
    ("mipnet", "clip", "seconds", "0", "[clip] seconds"),
    ("mipnet", "clip", "seconds", "100000", "[clip] seconds"),
    ("mipnet", "clip", "sample_rate", "1000000000", "[clip] sample_rate"),
    ("mipnet", "clip", "sample_rate", "4000", "[clip] sample_rate"),
    ("mipnet", "clip", "sample_rate", "32000.5", "[clip] sample_rate"),
    ("mipnet", "clip", "channels", "0", "[clip] channels"),
    ("mipnet", "clip", "audio_format", '"mp3"', "[clip] audio_format"),
    ("mipnet", "clip", "image", '"yes"', "[clip] image"),
    ("mipnet", "clip", "image_position", "1.5", "[clip] image_position"),
    ("mipnet", "clip", "image_format", '"png"', "[clip] image_format"),
    ("mipnet", "clip", "image_quality", "0", "[clip] image_quality"),
    ("mipnet", "clip", "image_quality", "101", "[clip] image_quality"),
    ("mipnet", "clip", "image_max_side", "-1", "[clip] image_max_side"),
    ("mipnet", "clip", "clips_per_source", "1.5", "[clip] clips_per_source"),
    ("mipnet", "clip", "clips_per_source", "true", "[clip] clips_per_source"),
    ("mipnet", "clip", "max_short_fraction", "-0.01", "[clip] max_short_fraction"),
    ("mipnet", "clip", "max_short_fraction", "1.0", "[clip] max_short_fraction"),
    ("mipnet", "clip", "secs", "3", "unknown keys ['secs']"),
    ("mipnet", "splits", "train", "0.5", "sum to 1"),
    ("mipnet", "splits", "test", "-0.1", "[splits] test"),
    ("mipnet", "splits", "seed", '"zero"', "[splits] seed"),
    ("mipnet", "splits", "stratify_by", '"genre"', "[splits] stratify_by"),
    ("mipnet", "shards", "sources_per_shard", "0", "[shards] sources_per_shard"),
    ("mipnet", "shards", "fetch_threads", "10000", "[shards] fetch_threads"),
    ("mipnet", "ytdlp", "format", '""', "[ytdlp] format"),
    ("mipnet", "ytdlp", "retries", "-1", "[ytdlp] retries"),
    ("mipnet", "ytdlp", "socket_timeout", "0", "[ytdlp] socket_timeout"),
    ("mipnet", "ytdlp", "sleep_interval", "-5", "[ytdlp] sleep_interval"),
    ("mipnet", "ytdlp", "force_keyframes_at_cuts", "1", "[ytdlp] force_keyframes_at_cuts"),
    ("mipnet", "ytdlp", "proxy", '"not a url"', "[ytdlp] proxy"),
    ("mipnet", "ytdlp", "proxy", '"ftp://proxy:21"', "[ytdlp] proxy"),
    ("mipnet", "ytdlp", "cookiefile", '"/no/such/cookies.txt"', "does not exist"),
    ("mipnet", "dataset", "licence", '"mit"', "unknown keys ['licence']"),
    ("mipnet", "dataset", "pretty_name", "3", "[dataset] pretty_name"),
    ("mipnet", "taxonomy", "name", "7", "[taxonomy] name"),
    ("mipnet", "taxonomy", "names", '"x"', "unknown keys ['names']"),
    ("mipnet", "clips", "seconds", "3", "unknown table [clips]"),
    ("audioset-mood", "clip", "channels", "-1", "[clip] channels"),
    ("audioset-mood", "splits", "stratify_by", '"mood"', "[splits] stratify_by"),
    ("yt8m-title", "yt8m", "split_by", '"random"', "[yt8m] split_by"),
    ("yt8m-title", "yt8m", "validate_as", '"train"', "[yt8m] validate_as"),
    ("yt8m-title", "yt8m", "lookup_rate", "-1", "[yt8m] lookup_rate"),
    ("yt8m-title", "yt8m", "lookup_base", '"ftp://data.yt8m.org/2/j/i"', "[yt8m] lookup_base"),
    ("yt8m-title", "yt8m", "threads", "0", "[yt8m] threads"),
    ("yt8m-title", "yt8m", "music_label_index", "-1", "[yt8m] music_label_index"),
    ("yt8m-keyword", "yt8m", "lookup_timeout", "nan", "[yt8m] lookup_timeout"),
    ("yt8m-keyword", "yt8m", "music_kg_id", "14", "[yt8m] music_kg_id"),
    ("yt8m-keyword", "yt8m", "metadata_rate", '"fast"', "[yt8m] metadata_rate"),
    ("yt8m-keyword", "yt8m", "shards", "3", "unknown keys ['shards']"),
]


@pytest.mark.parametrize(
    "recipe, section, key, value, words", BAD_VALUES, ids=[f"{r}-{s}.{k}={v}" for r, s, k, v, _ in BAD_VALUES]
)
def test_a_bad_recipe_value_is_a_one_line_error_naming_it(tmp_path, recipe, section, key, value, words):
    path = tmp_path / f"{recipe}.toml"
    path.write_text(_edit(recipe, section, key, value), encoding="utf-8")
    with pytest.raises(MipkitError) as failure:
        load_recipe(str(path))
    message = str(failure.value)
    assert words in message and "\n" not in message and len(message) < 400
    assert str(tmp_path) not in message  # local paths stay private: the file is named, not its folder


def test_a_recipe_value_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('clip = 3\n[dataset]\nname = "x"\n')
    with pytest.raises(MipkitError, match=r"\[clip\] must be a table"):
        load_recipe(str(path))


@pytest.mark.parametrize("recipe", ["mipnet", "audioset-mood", "yt8m-title", "yt8m-keyword"])
def test_every_shipped_recipe_passes_the_schema(recipe):
    loaded = load_recipe(recipe)
    assert loaded.name and loaded.clip.seconds > 0
    assert (loaded.yt8m is not None) == recipe.startswith("yt8m")


@pytest.mark.parametrize("content", [b"[clip]\nseconds = 10 # caf\xe9\n", "[clip]\nseconds = 10\n".encode("utf-16")])
def test_a_recipe_that_is_not_utf8_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "r.toml"
    path.write_bytes(content)
    with pytest.raises(MipkitError, match="r.toml is not UTF-8"):
        load_recipe(str(path))


@pytest.mark.parametrize(
    "dotted, value, words",
    [
        ("clip.seconds", float("nan"), "clip.seconds"),
        ("clip.seconds", float("inf"), "clip.seconds"),
        ("clip.sample_rate", 1_000_000_000, "clip.sample_rate"),
        ("clip.sample_rate", 7999, "clip.sample_rate"),
        ("clip.clips_per_source", 0, "clip.clips_per_source"),
        ("ytdlp.proxy", "localhost", "ytdlp.proxy"),
        ("ytdlp.proxy", "http://user:pw@proxy host:1", "ytdlp.proxy"),
        ("ytdlp.sleep_interval", -1.0, "ytdlp.sleep_interval"),
    ],
)
def test_a_bad_override_is_a_one_line_error(dotted, value, words):
    with pytest.raises(MipkitError) as failure:
        load_recipe("mipnet").with_overrides({dotted: value})
    message = str(failure.value)
    assert words in message and "\n" not in message
    assert "pw@" not in message  # a proxy's password is never echoed


@pytest.mark.parametrize(
    "proxy",
    [
        "http://127.0.0.1:3128",
        "https://user:pw@proxy.example:443",
        "socks5://127.0.0.1:1080",
        "socks5h://[::1]:9050",
        "",
    ],
)
def test_proxy_urls_that_yt_dlp_accepts_pass(proxy):
    assert load_recipe("mipnet").with_overrides({"ytdlp.proxy": proxy}).ytdlp.proxy == proxy


@pytest.mark.parametrize(
    "content, words",
    [
        ('[{"domain": ".example.com", "name": "SID", "value": "secret-value"}]', "JSON"),
        ("SID=secret-value; HSID=other-secret", "line 1"),
        ("# Netscape HTTP Cookie File\n.example.com\tTRUE\t/\tsecret-value\n", "line 2"),
        ("# Netscape HTTP Cookie File\n.example.com\tTRUE\t/\tTRUE\tsoon\tSID\tsecret-value\n", "line 2"),
        ("", "no cookies"),
        ("# Netscape HTTP Cookie File\n", "no cookies"),
    ],
)
def test_a_cookies_file_that_is_not_netscape_format_is_refused_without_echoing_it(tmp_path, content, words):
    path = tmp_path / "cookies.txt"
    path.write_text(content)
    with pytest.raises(MipkitError) as failure:
        check_cookies_file(path)
    message = str(failure.value)
    assert words in message and "Netscape" in message and "secret" not in message and str(tmp_path) not in message


def test_netscape_cookies_pass(tmp_path):
    path = tmp_path / "cookies.txt"
    path.write_text(NETSCAPE + "#HttpOnly_.example.com\tTRUE\t/\tTRUE\t1999999999\tHSID\tv\n\n# a comment\n")
    check_cookies_file(path)
    binary = tmp_path / "cookies.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MipkitError, match="Netscape"):
        check_cookies_file(binary)


def test_the_command_line_refuses_bad_configuration_before_any_work(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("url\nhttp://127.0.0.1:9/a.mp4\n")
    json_cookies = tmp_path / "cookies.json"
    json_cookies.write_text('[{"name": "SID", "value": "secret-value"}]')
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"[clip]\nseconds = 10 # caf\xe9\n")
    segments = tmp_path / "segments.csv"
    segments.write_text('--PJHxphWEs, 30.000, 40.000, "/m/t_h"\n')
    mipnet = ["build", "mipnet", "--manifest", str(manifest)]
    audioset = ["build", "audioset-mood", "--segments", str(segments)]
    yt8m = ["build", "yt8m-title", "--tfrecords", str(tmp_path / "train00.tfrecord")]
    cases = [
        (mipnet + ["--clip-seconds", "nan"], "clip.seconds"),
        (mipnet + ["--sample-rate", "1000000000"], "clip.sample_rate"),
        (mipnet + ["--cookies", str(json_cookies)], "Netscape"),
        (mipnet + ["--proxy", "not a url"], "ytdlp.proxy"),
        (mipnet + ["--recipe", str(latin)], "not UTF-8"),
        (audioset + ["--cookies", str(json_cookies)], "Netscape"),
        (audioset + ["--proxy", "socks5://"], "ytdlp.proxy"),
        (yt8m + ["--lookup-rate", "-1"], "yt8m.lookup_rate"),
        (yt8m + ["--lookup-base", "ftp://data.yt8m.org/2/j/i"], "yt8m.lookup_base"),
        (yt8m + ["--split-by", "random"], "yt8m.split_by"),
    ]
    # One process checks every case: each start of the CLI costs seconds on a shared machine.
    script = (
        "import sys\n"
        "from mipkit.cli.app import main\n"
        "for args in sys.argv[1:]:\n"
        "    sys.argv = ['mipkit'] + args.split('\\x1f')\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        print('EXIT', exc.code, flush=True)\n"
    )
    argv = ["\x1f".join([*command, "--out", str(tmp_path / f"out{i}")]) for i, (command, _) in enumerate(cases)]
    result = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout
    blocks = re.split(r"EXIT (\S+)\n", output)
    assert len(blocks) == 2 * len(cases) + 1, output
    for i, (extra, words) in enumerate(cases):
        message, code = blocks[2 * i].strip(), blocks[2 * i + 1]
        assert code == "2", (extra, output)
        assert words in message and message.startswith("error:") and len(message.splitlines()) == 1, (extra, message)
        assert "secret-value" not in message
        assert not (tmp_path / f"out{i}").exists(), f"{extra} started work before the configuration was checked"


def test_overrides_of_one_section_are_checked_together():
    recipe = load_recipe("mipnet").with_overrides({"splits.train": 0.6, "splits.validation": 0.2, "splits.test": 0.2})
    assert recipe.splits.ratios() == {"train": 0.6, "validation": 0.2, "test": 0.2}
    with pytest.raises(MipkitError, match="splits.train: split ratios .* sum to 1"):
        recipe.with_overrides({"splits.train": 0.7})

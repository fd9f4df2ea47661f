"""The live dashboard (its token, its data) and the run report (its content and size)."""

from __future__ import annotations

import concurrent.futures
import html.parser
import json
import os
import re
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import remotefn
from remotefn import remote
from remotefn.testing import probe

pytest.importorskip("bokeh", reason="the dashboard needs bokeh: pip install -e '.[dashboard]'")

from remotefn.dashboard.stream import TaskStream  # noqa: E402 - after the skip

#: A report of 100,000 calls stays under this many bytes (Bokeh's JavaScript is ~1.3 MB).
REPORT_BOUND = 3_000_000


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"no good: {x}")


def noop(x):
    return x


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def remote_references(page: str) -> list[str]:
    """The addresses elsewhere that the page's tags load (src, href), if any."""
    found = []

    class Tags(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(f"{tag} {name}={value}" for name, value in attrs
                         if name in ("src", "href") and value and "//" in value)

    Tags().feed(page)
    return found


@pytest.fixture
def watched():
    """A local session serving its dashboard; yields it and the URL from its URL file."""
    with remotefn.session("local", max_cores=2, forward_output=False,
                          dashboard=True) as session:
        with open(session.dashboard.url_file) as file:
            yield session, file.read().strip()


def test_the_url_and_its_token_are_only_in_a_private_file_whose_path_is_printed(capfd):
    with remotefn.session("local", max_cores=1, forward_output=False,
                          dashboard=True) as session:
        path = session.dashboard.url_file
        url = open(path).read().strip()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        run_dir = probe(session).runtime_dir
    printed = capfd.readouterr()
    token = re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=([\w-]+)", url).group(1)
    assert len(token) >= 40
    assert mode == 0o600 and os.path.dirname(path) == run_dir
    assert path in printed.err
    assert token not in printed.err + printed.out


def test_the_dashboard_refuses_a_request_without_its_token(watched):
    session, url = watched
    base, token = url.split("?token=")
    for path in ("", "data", "favicon.ico"):
        for query in ("", "?token=", "?token=" + token[:-1] + "x", "?token=" + token + "x"):
            assert get(base + path + query) == (403, b""), path + query
    assert get(base + "data?token=" + token)[0] == 200
    assert get(base + "?token=" + token)[0] == 200


def test_the_dashboard_listens_on_the_loopback_address_only(watched):
    session, url = watched
    assert session.dashboard.httpd.server_address[0] == "127.0.0.1"
    assert session.dashboard.thread.name == "remotefn-dashboard"  # not the hub's thread
    assert url.startswith(f"http://127.0.0.1:{session.dashboard.port}/")


def test_the_data_endpoint_reflects_a_known_run(watched):
    session, url = watched
    good = remote(square, block=True, max_workers=2)
    bad = remote(fail, block=True, max_workers=2)
    futures = [good(i) for i in range(6)] + [bad(i) for i in range(2)]
    concurrent.futures.wait(futures)
    data_url = url.replace("/?", "/data?")

    def data():
        status, body = get(data_url)
        assert status == 200
        return json.loads(body)

    from helpers import wait_until

    wait_until(lambda: data()["summary"]["calls"] == 8, what="the 8 calls on the dashboard")
    found = data()
    by_function = {row["function"]: row for row in found["summary"]["functions"]}
    square_row, fail_row = by_function[futures[0].info.function], by_function[
        futures[-1].info.function]
    assert (square_row["finished"], square_row["failed"], square_row["queued"]) == (6, 0, 0)
    assert (fail_row["finished"], fail_row["failed"]) == (0, 2)
    workers = {f.info.worker_id for f in futures}
    assert {w["worker"] for w in found["summary"]["workers"]} == workers
    assert sum(w["calls"] for w in found["summary"]["workers"]) == 8
    stream = found["stream"]
    assert len(stream["worker"]) == 8 and set(stream["worker"]) == workers
    assert stream["color"].count("#d62728") == 2  # red: the two failures
    errors = found["summary"]["errors"]
    assert sorted(e["message"] for e in errors) == ["ValueError: no good: 0",
                                                     "ValueError: no good: 1"]
    assert all("raise ValueError" in e["traceback"] for e in errors)  # the remote traceback
    assert found["cores"]["total"] == 2
    assert sum(node["workers"] for node in found["nodes"]) == len(workers)
    # Asked again with the version it has, the page gets no task stream to redraw.
    again = json.loads(get(data_url + f"&stream={found['stream_version']}")[1])
    assert again["stream"] is None


def test_bad_dashboard_settings_name_the_value():
    with pytest.raises(TypeError, match="dashboard must be True, False or a port, got 'yes'"):
        remotefn.session("local", dashboard="yes")
    with pytest.raises(ValueError, match="dashboard must be a port from 1 to 65535, got 70000"):
        remotefn.session("local", dashboard=70000)


def test_a_report_of_100k_calls_is_aggregated_and_stays_under_its_bound(tmp_path):
    record, out = tmp_path / "run.jsonl", tmp_path / "run.html"
    with remotefn.session("local", max_cores=2, record=record, forward_output=False):
        handle = remote(noop, block=True, max_workers=2)
        concurrent.futures.wait([handle(i) for i in range(100_000)])
    done = subprocess.run([sys.executable, "-m", "remotefn", "report", str(record), "-o",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    size = out.stat().st_size
    assert size < REPORT_BOUND, f"the report has {size:,} bytes"
    page = out.read_text()
    assert "100000 calls" not in page  # counted by the page's script, from its data
    data = json.loads(re.search(r"const REMOTEFN = \{data: (.*), live: false", page).group(1))
    assert data["summary"]["calls"] == 100_000
    assert data["summary"]["aggregated"]
    assert sum(row["finished"] for row in data["summary"]["functions"]) == 100_000
    assert remote_references(page) == []


def test_a_session_writes_its_report_from_memory_without_a_record(tmp_path):
    with remotefn.session("local", max_cores=2, forward_output=False) as session:
        handle = remote(square, block=True, max_workers=2)
        concurrent.futures.wait([handle(i) for i in range(5)])
        session.report(tmp_path / "run.html")
    page = (tmp_path / "run.html").read_text()
    data = json.loads(re.search(r"const REMOTEFN = \{data: (.*), live: false", page).group(1))
    assert data["summary"]["calls"] == 5
    assert [row["function"] for row in data["summary"]["functions"]] == [
        "test_dashboard.square"]


def test_the_report_command_names_a_file_that_is_not_a_record(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text('{"t": 1.0, "event": "queued", "call": 1, "detail": "f"}\nhello\n')
    done = subprocess.run([sys.executable, "-m", "remotefn", "report", str(bad), "-o",
                           str(tmp_path / "run.html")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"cannot write the report: {bad}, line 2: not an event of "
                                   f"a remotefn record (Expecting value: line 1 column 1 "
                                   f"(char 0))")


def test_the_task_stream_keeps_a_bar_per_call_then_a_bounded_number_of_buckets():
    stream = TaskStream(origin=0.0, bar_limit=100, buckets=50)
    for i in range(100):
        stream.add(f"w{i % 2}", "f", i * 0.01, i * 0.01 + 0.005, failed=i == 7, call_id=i)
    columns = stream.columns()
    assert len(columns["worker"]) == 100 and not stream.aggregated
    assert columns["color"][7] == "#d62728" and columns["color"].count("#d62728") == 1
    for i in range(100, 200_000):
        stream.add(f"w{i % 2}", "g" if i % 3 else "f", i * 0.01, i * 0.01 + 0.005, False, i)
    columns = stream.columns()
    assert stream.aggregated
    assert len(columns["worker"]) <= 2 * 2 * 50  # two workers, at most 2 x 50 buckets each
    assert columns["end"][-1] >= 2000.0 > columns["start"][-1]  # the run's whole span
    assert "#d62728" in columns["color"]  # the bucket holding the failure stays red


def test_a_port_in_use_is_named_and_the_session_leaves_nothing_running():
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"the dashboard cannot listen on 127.0.0.1:{port}: "
                                          "Address already in use"):
            remotefn.session("local", max_cores=1, dashboard=port)
    finally:
        taken.close()


def test_a_stream_version_that_is_not_a_number_gets_the_whole_stream(watched):
    session, url = watched
    remote(square, block=True, max_workers=1)(3).result(timeout=60)
    data_url = url.replace("/?", "/data?")
    for version in ("--1", "%C2%B2", "x", "", "-1"):
        status, body = get(data_url + "&stream=" + version)
        assert status == 200, version
        assert json.loads(body)["stream"] is not None, version


def test_text_of_a_run_cannot_end_or_hide_the_page_script():
    from remotefn.dashboard.page import render
    from remotefn.dashboard.tally import Tally

    message = "ValueError: <!--<script>"
    traceback = "</script><script>alert(1)</script>"
    tally = Tally(0.0)
    tally.ran("failed", "f<!--<script>", 1.0, "w", 0.5, 1.0, error=(message, traceback))
    page = render({"summary": tally.summary(), "stream": tally.stream.columns()}, "t",
                  live=False)
    embedded = re.search(r"const REMOTEFN = \{data: (.*), live: false", page).group(1)
    assert "<" not in embedded
    (error,) = json.loads(embedded)["summary"]["errors"]
    assert (error["message"], error["traceback"]) == (message, traceback)


def test_a_dashboard_that_cannot_write_its_url_file_closes_its_socket(tmp_path):
    from remotefn.dashboard.server import URL_FILE, Dashboard
    from remotefn.hub.recorder import Recorder

    (tmp_path / URL_FILE).write_text("")
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileExistsError):
        Dashboard(0, str(tmp_path), dict, Recorder())
    assert len(os.listdir("/proc/self/fd")) == before


def test_serving_the_page_leaves_bokeh_out_of_the_sessions_process():
    """The page is rendered by a child process: Bokeh's many objects would otherwise sit in
    the session's heap, and every full garbage collection during the run would walk them."""
    code = """
import sys, urllib.request
import remotefn
with remotefn.session("local", max_cores=1, forward_output=False, dashboard=True) as session:
    url = open(session.dashboard.url_file).read().strip()
    page = urllib.request.urlopen(url, timeout=120).read().decode()
assert "Bokeh" in page and "task stream" in page.lower(), page[:300]
print(sorted(name for name in sys.modules if name.split(".")[0] == "bokeh"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_a_sessions_report_leaves_bokeh_out_of_the_sessions_process(tmp_path):
    """session.report() mid-run renders in a child process, as the live page does."""
    code = f"""
import sys
import remotefn
from remotefn import remote

with remotefn.session("local", max_cores=1, forward_output=False) as session:
    remote(abs, block=True)(-2).result(timeout=120)
    session.report({str(tmp_path / "run.html")!r})
print(sorted(name for name in sys.modules if name.split(".")[0] == "bokeh"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    page = (tmp_path / "run.html").read_text()
    data = json.loads(re.search(r"const REMOTEFN = \{data: (.*), live: false", page).group(1))
    assert data["summary"]["calls"] == 1

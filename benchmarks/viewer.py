"""Stands for a browser with the dashboard open: loads the page once (and says so on stdout),
then asks for its data as often as the page does (every 0.5 s, with the task stream's version
it has), until killed.

    python benchmarks/viewer.py URL_FILE
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

POLL = 0.5


def main(url_file: str) -> None:
    url = open(url_file).read().strip()
    urllib.request.urlopen(url, timeout=30).read()
    print("page loaded", flush=True)
    version = -1
    while True:
        data = json.loads(urllib.request.urlopen(
            url.replace("/?", "/data?") + f"&stream={version}", timeout=30).read())
        if data["stream"] is not None:
            version = data["stream_version"]
        time.sleep(POLL)  # the page's own interval between two requests


if __name__ == "__main__":
    main(sys.argv[1])

"""Walks an artist's albums by following `next`, then reads a track, with
requests and requests-unixsocket over sluice's Unix socket.

Run by internal/e2e: python3 walk.py ARTIST_ID TRACK_ID, with SLUICE_SOCKET
set; prints one JSON line. With SLUICE_BASE=1 it sends the socket URL as
Sluice-Base, and follows every link literally.
"""
import json
import os
import sys
from urllib.parse import quote

import requests_unixsocket

# The setups docs/clients.md shows. requests-unixsocket names the socket in
# the URL's host; the request itself says "Host: localhost", so sluice
# writes the links in its answers under http://localhost/v1/spotify, and
# following one means putting the socket back in. Or: send that socket URL
# as Sluice-Base, and every link in an answer is one this session can
# follow as it is.
sluice = "http+unix://" + quote(os.environ["SLUICE_SOCKET"], safe="")
with_base = os.environ.get("SLUICE_BASE") == "1"
session = requests_unixsocket.Session()
session.headers["Authorization"] = "Bearer not-a-spotify-token"  # sluice ignores it
if with_base:
    session.headers["Sluice-Base"] = sluice


def get(url):
    if with_base:
        if not url.startswith(sluice + "/"):
            raise SystemExit(f"link {url} does not lead back to sluice's socket")
    else:
        url = url.replace("http://localhost", sluice, 1)
    r = session.get(url, timeout=60)
    r.raise_for_status()
    return r.json()


artist, track = sys.argv[1], sys.argv[2]
url = f"{sluice}/v1/spotify/v1/artists/{artist}/albums?limit=10"
pages, ids = 0, []
while url:
    page = get(url)
    pages += 1
    ids += [a["id"] for a in page["items"]]
    url = page["next"]
t = get(f"{sluice}/v1/spotify/v1/tracks/{track}")
client = "requests-unixsocket+Sluice-Base" if with_base else "requests-unixsocket"
print(json.dumps({"client": client, "pages": pages, "albums": len(ids),
                  "distinct": len(set(ids)), "total": page["total"], "track": t["name"]}))

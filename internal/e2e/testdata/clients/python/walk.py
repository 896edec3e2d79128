"""Walks an artist's albums by following `next`, then reads a track, with
requests and requests-unixsocket over sluice's Unix socket.

Run by internal/e2e/clients_test.go: python3 walk.py ARTIST_ID TRACK_ID,
with SLUICE_SOCKET set; prints one JSON line.
"""
import json
import os
import sys
from urllib.parse import quote

import requests_unixsocket

# The setup docs/clients.md shows. requests-unixsocket names the socket in
# the URL's host; the request itself says "Host: localhost", so sluice
# writes the links in its answers under http://localhost/v1/spotify, and
# following one means putting the socket back in.
sluice = "http+unix://" + quote(os.environ["SLUICE_SOCKET"], safe="")
session = requests_unixsocket.Session()
session.headers["Authorization"] = "Bearer not-a-spotify-token"  # sluice ignores it


def get(url):
    r = session.get(url.replace("http://localhost", sluice, 1), timeout=60)
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
print(json.dumps({"client": "requests-unixsocket", "pages": pages, "albums": len(ids),
                  "distinct": len(set(ids)), "total": page["total"], "track": t["name"]}))

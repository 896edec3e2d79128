"""Walks an artist's albums by following `next` literally, then reads a
track, with requests and requests-unixsocket over sluice's Unix socket,
telling sluice the base to write links under (Sluice-Base).

Run by internal/e2e/tcplistener_test.go: python3 walk_base.py ARTIST_ID
TRACK_ID, with SLUICE_SOCKET set; prints one JSON line.
"""
import json
import os
import sys
from urllib.parse import quote

import requests_unixsocket

# The setup docs/clients.md shows: the socket URL requests-unixsocket
# understands, sent as Sluice-Base, so every link in an answer is one this
# session can follow as it is.
sluice = "http+unix://" + quote(os.environ["SLUICE_SOCKET"], safe="")
session = requests_unixsocket.Session()
session.headers["Sluice-Base"] = sluice
session.headers["Authorization"] = "Bearer not-a-spotify-token"  # sluice ignores it


def get(url):
    if not url.startswith(sluice + "/"):
        raise SystemExit(f"link {url} does not lead back to sluice's socket")
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
print(json.dumps({"client": "requests-unixsocket+Sluice-Base", "pages": pages, "albums": len(ids),
                  "distinct": len(set(ids)), "total": page["total"], "track": t["name"]}))

// Walks an artist's albums by following `next`, then reads a track, with
// spotify-web-api-node over sluice's Unix socket. Run by
// internal/e2e/clients_test.go: node web-api-node.mjs ARTIST_ID TRACK_ID,
// with SLUICE_SOCKET set; prints one JSON line.
import SpotifyWebApi from "spotify-web-api-node";
import BaseRequest from "spotify-web-api-node/src/base-request.js";

// The library hard-codes https://api.spotify.com:443 and offers no base URL
// or agent option. The smallest patch, the one docs/clients.md shows:
// every request URI becomes superagent's http+unix form for the socket,
// under sluice's Spotify prefix.
const socket = "http+unix://" + process.env.SLUICE_SOCKET.replaceAll("/", "%2F");
// (The request class is not exported; its builder makes one.)
Object.getPrototypeOf(BaseRequest.builder().build()).getURI = function () {
  return socket + "/v1/spotify" + this.getPath();
};

const api = new SpotifyWebApi();
api.setAccessToken("not-a-spotify-token"); // sluice ignores it

const [artist, track] = process.argv.slice(2);
let { body: page } = await api.getArtistAlbums(artist, { limit: 10 });
const ids = [];
let pages = 0;
for (;;) {
  pages++;
  ids.push(...page.items.map((a) => a.id));
  if (!page.next) break;
  // The library cannot request a URL; next's query holds the next offset.
  const q = new URLSearchParams(page.next.split("?")[1]);
  ({ body: page } = await api.getArtistAlbums(artist, Object.fromEntries(q)));
}
const { body: t } = await api.getTrack(track);
console.log(JSON.stringify({ client: "spotify-web-api-node", pages, albums: ids.length, distinct: new Set(ids).size, total: page.total, track: t.name }));

// Walks an artist's albums by following `next`, then reads a track, with
// @spotify/web-api-ts-sdk over sluice's Unix socket. Run by
// internal/e2e/clients_test.go: node ts-sdk.mjs ARTIST_ID TRACK_ID, with
// SLUICE_SOCKET set; prints one JSON line.
import { SpotifyApi } from "@spotify/web-api-ts-sdk";
import { Agent, fetch } from "undici";

// The setup docs/clients.md shows. The SDK's API root is private and fixed
// at https://api.spotify.com/v1/, so its fetch option moves every URL under
// sluice's Spotify prefix and dials the socket. The token never expires:
// sluice ignores it, and one that expires makes the SDK refresh it at
// accounts.spotify.com.
const spotify = "https://api.spotify.com/";
const sluice = "http://sluice/v1/spotify/";
const dispatcher = new Agent({ connect: { socketPath: process.env.SLUICE_SOCKET } });
const sdk = SpotifyApi.withAccessToken(
  "unused",
  { access_token: "not-a-spotify-token", token_type: "Bearer", expires_in: 3600, refresh_token: "", expires: Infinity },
  { fetch: (url, init) => fetch(String(url).replace(spotify, sluice), { ...init, dispatcher }) },
);

const [artist, track] = process.argv.slice(2);
let page = await sdk.artists.albums(artist, undefined, undefined, 10);
const ids = [];
let pages = 0;
for (;;) {
  pages++;
  ids.push(...page.items.map((a) => a.id));
  if (!page.next) break;
  // next is http://sluice/v1/spotify/v1/...; makeRequest takes the part
  // after the API root.
  page = await sdk.makeRequest("GET", page.next.slice((sluice + "v1/").length));
}
const t = await sdk.tracks.get(track);
console.log(JSON.stringify({ client: "@spotify/web-api-ts-sdk", pages, albums: ids.length, distinct: new Set(ids).size, total: page.total, track: t.name }));
await dispatcher.close();

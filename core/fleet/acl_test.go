package fleet

import (
	"context"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/scheduler"
	"github.com/sluice-dev/sluice/internal/testenv"
)

// The ACL line of docs/fleet.md is what users paste into their Redis: the
// tests below read it from the docs themselves, so the docs and the code
// cannot drift apart unnoticed.
const (
	fleetDoc   = "../../docs/fleet.md"
	aclHeading = "### A Redis user for sluice (ACL)"
)

// docACLRule is the fenced ACL line of the docs' ACL section, as written
// (PASSWORD and the fleet name default still in it). A missing section,
// block or line fails the test: the docs must keep the line this test
// checks.
func docACLRule(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(fleetDoc)
	if err != nil {
		t.Fatalf("the ACL line is read from the docs: %v", err)
	}
	_, sec, ok := strings.Cut(string(b), "\n"+aclHeading+"\n")
	if !ok {
		t.Fatalf("%s has no section %q: the ACL line users copy must stay documented (and tested here)", fleetDoc, aclHeading)
	}
	if i := regexp.MustCompile(`(?m)^#{1,3} `).FindStringIndex(sec); i != nil {
		sec = sec[:i[0]]
	}
	_, block, ok := strings.Cut(sec, "\n```\n")
	if ok {
		block, _, ok = strings.Cut(block, "\n```\n")
	}
	if !ok {
		t.Fatalf("%s, section %q: no fenced block", fleetDoc, aclHeading)
	}
	var rules []string
	for l := range strings.SplitSeq(block, "\n") {
		if strings.HasPrefix(l, "user sluice on >PASSWORD ") {
			rules = append(rules, strings.TrimSpace(l))
		}
	}
	if len(rules) != 1 {
		t.Fatalf("%s, section %q: %d lines \"user sluice on >PASSWORD ...\" in its block, want 1:\n%s", fleetDoc, aclHeading, len(rules), block)
	}
	return rules[0]
}

// userRule is the docs' line as a user makes it theirs: the password in
// place of PASSWORD, and the fleet's name in the four places the docs say
// hold default.
func userRule(t *testing.T, doc, name, password string) string {
	t.Helper()
	if n := strings.Count(doc, "default"); n != 4 {
		t.Fatalf("the docs' ACL line holds the fleet name default %d times, but says \"put yours in its four places\": %s", n, doc)
	}
	if n := strings.Count(doc, "PASSWORD"); n != 1 {
		t.Fatalf("the docs' ACL line holds PASSWORD %d times, want 1: %s", n, doc)
	}
	return strings.Replace(strings.ReplaceAll(doc, "default", name), "PASSWORD", password, 1)
}

// aclName is the fleet's name in these tests: not default, so a pattern
// the docs wrote for default alone (not in the four places) fails.
const aclName = "acl-fleet"

// aclPassword is the restricted user's: hex, so it needs no escaping in
// the URL or the ACL file.
const aclPassword = "0f1e2d3c4b5a69788796a5b4"

// deniedBeyondDocs is what ACL LOG holds that the docs do not accept:
// every entry but CLIENT SETINFO, which go-redis sends at each connection
// to Redis 7.2 or later and skips when refused (the docs say so, and that
// +client|setinfo is what keeps it out of ACL LOG).
func deniedBeyondDocs(log []testenv.ACLLogEntry) []testenv.ACLLogEntry {
	var out []testenv.ACLLogEntry
	for _, e := range log {
		if e.Reason == "command" && e.Object == "client|setinfo" {
			continue
		}
		out = append(out, e)
	}
	return out
}

// aclMember connects one member as the restricted user, with a short
// restart hold (the rule is the same; the test's windows are short).
func aclMember(t *testing.T, url string) *Client {
	t.Helper()
	q, err := New(Options{URL: url, Name: aclName, Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	q.restartHold = 0
	t.Cleanup(func() { q.Close() })
	return q
}

// eventually retries op (a client reconnecting after Redis restarted
// fails its first calls) until it succeeds, or fails the test with its
// last error.
func eventually(t *testing.T, what string, op func() error) {
	t.Helper()
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for err = op(); err != nil; err = op() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDocsACLLine: the ACL line docs/fleet.md gives is enough for every
// fleet operation. Two members log in as that user (a name other than
// default, substituted as the docs say) and run each Redis operation of
// the package: heartbeats (the first republishing, and one after an empty
// restart that notices it), Redis's run id (INFO), status, grants, a full
// bucket's queue and its dequeue, restamp, release, budget, pause, seed,
// the purchase guard, the in-flight lease, the shared cache (lookup,
// store, renew, unlock, purge, the other member hearing the purge), a
// database other than 0 (SELECT) and leaving. Each must succeed, and ACL
// LOG (read as the admin) must hold nothing the docs do not accept: a
// command refused inside a script, a key outside the patterns or a
// channel not granted shows there even where the code swallows the error
// (leaving, the purge's listener).
func TestDocsACLLine(t *testing.T) {
	everyOperationAs(t, userRule(t, docACLRule(t), aclName, aclPassword))
}

// everyOperationAs runs each Redis operation of the package as rule's
// user, failing the test at the first that fails or that ACL LOG shows
// refused.
func everyOperationAs(t *testing.T, rule string) {
	rd := testenv.StartRedisACL(t, rule)
	ctx := testenv.Ctx(t, 3*time.Minute)
	checkLog := func(when string) {
		t.Helper()
		if bad := deniedBeyondDocs(rd.ACLLog()); len(bad) > 0 {
			t.Fatalf("%s, Redis refused the docs' ACL user:\n%v\nrule: %s", when, bad, rule)
		}
	}
	a, b := aclMember(t, rd.URL), aclMember(t, rd.URL)
	const bucket = "acl.b"
	l := scheduler.Limit{Requests: 2, Window: time.Second}
	span := l.Window + 100*time.Millisecond
	limits := map[string]scheduler.Limit{bucket: l}

	// Heartbeats: the first asks to republish (the hold and beat scripts
	// on the bucket's and the fleet's keys).
	for _, q := range []*Client{a, b} {
		if r, err := q.Beat(ctx, limits); err != nil || !r.Republish {
			t.Fatalf("first beat: %+v, %v", r, err)
		}
	}
	if id := a.serverRunID(ctx); id == "" {
		t.Fatal("Redis's run id (INFO server) could not be read")
	}
	if st := a.Status(ctx, limits); !st.Reachable || len(st.Members) != 2 {
		t.Fatalf("status: %+v", st)
	}

	// Grants: past the fresh store's hold, then restamped.
	g1 := grantUntil(t, a, bucket, l, span)
	if err := a.Restamp(ctx, bucket, g1.Member, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Budget(ctx, bucket, l, span); err != nil {
		t.Fatal(err)
	}
	// A full bucket: B's ask is queued (its ticket written), then leaves
	// the queue. A slow machine may see the window move on between asks:
	// B is then granted, which fills it again.
	queued := false
	var mine []string
	for deadline := time.Now().Add(30 * time.Second); !queued; {
		g, err := b.GrantQueued(ctx, bucket, l, span, "acl-ticket", -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if g.Granted {
			mine = append(mine, g.Member)
		}
		queued = g.Queued
		if time.Now().After(deadline) {
			t.Fatalf("never queued on a full bucket: %+v", g)
		}
	}
	if err := b.Dequeue(ctx, bucket, "acl-ticket"); err != nil {
		t.Fatal(err)
	}
	for _, m := range mine {
		if err := b.Release(ctx, bucket, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Pause(ctx, bucket, time.Now().Add(time.Minute), "429 | acl"); err != nil {
		t.Fatal(err)
	}
	if g, err := b.Grant(ctx, bucket, l, span); err != nil || g.Granted || !strings.Contains(g.Reason, "paused") {
		t.Fatalf("grant in the fleet's pause: %+v, %v", g, err)
	}
	// A seeded grant counts in the fleet's window.
	if err := b.Seed(ctx, "acl.seed", span, []scheduler.SeedGrant{{Local: time.Now(), Age: 10 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	if rem, _, err := b.Budget(ctx, "acl.seed", l, span); err != nil || rem != l.Requests-1 {
		t.Fatalf("budget after a seed: %d, %v; want %d", rem, err, l.Requests-1)
	}

	// The purchase guard: claimed, refused to the other member, settled,
	// replaced by a confirmed repeat, released.
	const op = "hellorf:acl"
	ok, tok, _, err := a.ClaimGuard(ctx, op, time.Minute, 0, false)
	if err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	if ok, _, prev, err := b.ClaimGuard(ctx, op, time.Minute, 0, false); err != nil || ok || prev.State != GuardInFlight {
		t.Fatalf("identical claim on B: %v %+v %v", ok, prev, err)
	}
	if err := a.SettleGuard(ctx, op, tok, GuardDone, "P-1", false); err != nil {
		t.Fatal(err)
	}
	ok, tok, _, err = b.ClaimGuard(ctx, op, time.Minute, 0, true)
	if err != nil || !ok {
		t.Fatalf("confirmed repeat: %v, %v", ok, err)
	}
	if err := b.SettleGuard(ctx, op, tok, "", "", true); err != nil {
		t.Fatal(err)
	}

	// The in-flight lease: exclusive, renewed, released, taken by B.
	lease, ok, _, err := a.TakeLease(ctx, "spotify.api", 1, 5*time.Second)
	if err != nil || !ok {
		t.Fatalf("lease: %v, %v", ok, err)
	}
	if _, ok, _, err := b.TakeLease(ctx, "spotify.api", 1, 5*time.Second); err != nil || ok {
		t.Fatalf("B took a held lease: %v, %v", ok, err)
	}
	if ok, err := a.RenewLease(ctx, "spotify.api", lease, 5*time.Second); err != nil || !ok {
		t.Fatalf("renew: %v, %v", ok, err)
	}
	if err := a.ReleaseLease(ctx, "spotify.api", lease); err != nil {
		t.Fatal(err)
	}
	lb, ok, _, err := b.TakeLease(ctx, "spotify.api", 1, 5*time.Second)
	if err != nil || !ok {
		t.Fatalf("B's lease after the release: %v, %v", ok, err)
	}
	if err := b.ReleaseLease(ctx, "spotify.api", lb); err != nil {
		t.Fatal(err)
	}

	// The shared cache, both members listening for purges.
	var heardB atomic.Int64
	ca := a.Cache(func(string) {})
	cb := b.Cache(func(p string) {
		if p == "ineo" {
			heardB.Add(1)
		}
	})
	defer ca.Close()
	defer cb.Close()
	const key, key2 = "ineo:acl", "ineo:acl2"
	f, err := ca.Lookup(ctx, key, false)
	if err != nil || f.Lock == "" {
		t.Fatalf("a miss takes the fill lock: %+v, %v", f, err)
	}
	if f, err := cb.Lookup(ctx, key, false); err != nil || !f.Wait {
		t.Fatalf("B's miss while A fills: %+v, %v", f, err)
	}
	if err := ca.Renew(ctx, key, f.Lock); err != nil {
		t.Fatal(err)
	}
	if err := ca.Store(ctx, key, []byte("answer"), time.Minute, time.Hour, f.Lock); err != nil {
		t.Fatal(err)
	}
	if f, err := cb.Lookup(ctx, key, false); err != nil || string(f.Value) != "answer" || f.Fresh <= 0 {
		t.Fatalf("B's hit: %+v, %v", f, err)
	}
	f, err = ca.Lookup(ctx, key2, false)
	if err != nil || f.Lock == "" {
		t.Fatalf("lookup: %+v, %v", f, err)
	}
	if err := ca.Unlock(ctx, key2, f.Lock); err != nil {
		t.Fatal(err)
	}
	if f, err := cb.Lookup(ctx, key2, false); err != nil || f.Wait || f.Lock != "" {
		t.Fatalf("after a failed fill B fetches on its own: %+v, %v", f, err)
	}
	// Both subscriptions live (else the notice could go before B
	// listens), then A's purge: B hears it.
	testenv.Eventually(t, 30*time.Second, "both members subscribed to the purge channel", func() bool {
		v, err := rd.Admin("PUBSUB", "NUMSUB", ca.channel)
		n, _ := v.([]any)
		return err == nil && len(n) == 2 && n[1] == int64(2)
	})
	if err := ca.Purge(ctx, "ineo"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "B to hear A's purge", func() bool { return heardB.Load() > 0 })
	if f, err := cb.Lookup(ctx, key, false); err != nil || f.Value != nil {
		t.Fatalf("after the purge: %+v, %v", f, err)
	}

	// A database other than 0: SELECT at each connection.
	c := aclMember(t, strings.Replace(rd.URL, "db=0", "db=1", 1))
	if _, err := c.Beat(ctx, limits); err != nil {
		t.Fatalf("beat in database 1: %v", err)
	}
	c.Close()
	checkLog("before the restart") // ACL LOG does not survive one

	// Redis restarts empty: each member's next beat notices (every
	// script sent again in full: Redis forgot them too).
	rd.Kill()
	rd.Start()
	for _, q := range []*Client{a, b} {
		var r scheduler.BeatResult
		eventually(t, "beat after the restart", func() (err error) { r, err = q.Beat(ctx, limits); return err })
		if !r.Forgot {
			t.Fatalf("beat after an empty restart: %+v", r)
		}
	}
	grantUntil(t, b, bucket, l, span)

	// B leaves: A sees one member.
	cb.Close()
	b.Close()
	if st := a.Status(ctx, limits); !st.Reachable || len(st.Members) != 1 || !st.Members[0].Self {
		t.Fatalf("status after B left: %+v", st)
	}
	ca.Close()
	a.Close()
	checkLog("after the restart")
}

// TestDocsACLClaims: what the docs' ACL section says about changing the
// line holds. A plain ~sluice:v1:* key pattern gets NOPERM on every grant
// (so the docs' three patterns are needed); without +info a member still
// works and notices an empty restart by the fleet's epoch alone (INFO is
// optional, as said).
func TestDocsACLClaims(t *testing.T) {
	keys := regexp.MustCompile(` ~\S+`)
	for _, tc := range []struct {
		name  string
		edit  func(string) string
		check func(t *testing.T, rd *testenv.RedisACL, q *Client)
	}{{
		name: "plain key pattern",
		edit: func(r string) string {
			r = keys.ReplaceAllString(r, "")
			return strings.Replace(r, " resetchannels", " resetchannels ~sluice:v1:*", 1)
		},
		check: func(t *testing.T, rd *testenv.RedisACL, q *Client) {
			_, err := q.Grant(context.Background(), "acl.b", scheduler.Limit{Requests: 1, Window: time.Second}, time.Second)
			if err == nil || !strings.Contains(err.Error(), "NOPERM") {
				t.Fatalf("grant with ~sluice:v1:* alone: %v; the docs say NOPERM", err)
			}
			// The script's KEYS are checked before it runs.
			if log := rd.ACLLog(); len(log) == 0 || log[0].Reason != "key" {
				t.Fatalf("ACL LOG after the refused grant: %v; want a key refused", log)
			}
		},
	}, {
		name: "without info",
		edit: func(r string) string { return strings.Replace(r, " +info ", " ", 1) },
		check: func(t *testing.T, rd *testenv.RedisACL, q *Client) {
			ctx := context.Background()
			limits := map[string]scheduler.Limit{"acl.b": {Requests: 1, Window: time.Second}}
			if r, err := q.Beat(ctx, limits); err != nil || !r.Republish {
				t.Fatalf("first beat without INFO: %+v, %v", r, err)
			}
			if id := q.serverRunID(ctx); id != "" {
				t.Fatalf("INFO answered (run id %q) though the rule lacks +info", id)
			}
			bad := deniedBeyondDocs(rd.ACLLog())
			if len(bad) == 0 {
				t.Fatal("ACL LOG shows no refused INFO")
			}
			for _, e := range bad {
				if e.Reason != "command" || e.Object != "info" {
					t.Fatalf("refused beyond INFO: %v", e)
				}
			}
			rd.Kill()
			rd.Start()
			var r scheduler.BeatResult
			eventually(t, "beat after the restart", func() (err error) { r, err = q.Beat(ctx, limits); return err })
			if !r.Forgot {
				t.Fatalf("without INFO, an empty restart went unnoticed: %+v", r)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			doc := docACLRule(t)
			rule := userRule(t, doc, aclName, aclPassword)
			edited := tc.edit(rule)
			if edited == rule {
				t.Fatalf("the edit changed nothing in the docs' line: %s", rule)
			}
			rd := testenv.StartRedisACL(t, edited)
			tc.check(t, rd, aclMember(t, rd.URL))
		})
	}
}

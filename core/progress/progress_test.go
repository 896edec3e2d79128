package progress

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	tr := New()
	done := tr.Start("a", "ineo", "spotify.track")
	if st, ok := tr.Get("a"); !ok || st.Stage != StageStarted {
		t.Fatalf("after Start: %+v, %v", st, ok)
	}
	exp := time.Now().Add(3 * time.Second)
	tr.Set("a", "spotify", StageBudget, "spotify.api", 1, exp) // another provider's: ignored
	if st, _ := tr.Get("a"); st.Stage != StageStarted {
		t.Fatalf("another provider moved the call: %+v", st)
	}
	tr.Set("a", "ineo", StageBudget, "ineo.spotify", 2, exp)
	if st, _ := tr.Get("a"); st.Stage != StageBudget || st.Bucket != "ineo.spotify" || st.Ahead != 2 || !st.Expected.Equal(exp) {
		t.Fatalf("after Set: %+v", st)
	}
	dupDone := tr.Start("a", "ineo", "spotify.track") // reused id: the first call keeps it
	dupDone()
	if _, ok := tr.Get("a"); !ok {
		t.Fatal("a reused id's done forgot the first call")
	}
	done()
	if _, ok := tr.Get("a"); ok {
		t.Fatal("still tracked after done")
	}
}

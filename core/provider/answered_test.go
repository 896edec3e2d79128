package provider

import (
	"testing"
	"time"
)

// TestAnswersRoundTrip: what a plugin puts in AnsweredTrailer is what the
// host reads back, to the nanosecond (the scheduler finds the grant by its
// exact time); values that are not three fields of positive numbers are
// dropped.
func TestAnswersRoundTrip(t *testing.T) {
	at := time.Unix(1_764_000_000, 123_456_789)
	var st callStats
	st.answered("ineo.spotify", at, at.Add(300*time.Millisecond))
	st.answered("ineo.spotify", time.Time{}, at) // grant time unknown: not reported
	values := append(st.answerValues(), "", "ineo.spotify 1", "ineo.spotify x 2", "ineo.spotify 0 5", "a b c d")
	got := ParseAnswers(values)
	if len(got) != 1 || got[0].Bucket != "ineo.spotify" || !got[0].GrantedAt.Equal(at) || !got[0].Answered.Equal(at.Add(300*time.Millisecond)) {
		t.Fatalf("ParseAnswers(%q) = %+v, want the one exchange recorded", values, got)
	}
}

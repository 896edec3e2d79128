package provider

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AnsweredTrailer is the Call trailer key under which a plugin reports,
// for each upstream exchange of the call, when its answer arrived, so the
// host can count the grant there (scheduler.Scheduler.Answered). One value
// per exchange: "BUCKET GRANTED_AT_NS ANSWERED_AT_NS".
const AnsweredTrailer = "sluice-answered"

// Answer is one exchange as reported in AnsweredTrailer.
type Answer struct {
	Bucket              string
	GrantedAt, Answered time.Time
}

// String is the exchange's AnsweredTrailer value.
func (a Answer) String() string {
	return fmt.Sprintf("%s %d %d", a.Bucket, a.GrantedAt.UnixNano(), a.Answered.UnixNano())
}

// ParseAnswers reads AnsweredTrailer values; malformed ones are skipped (a
// plugin can only ever delay its own buckets' later grants with them).
func ParseAnswers(values []string) []Answer {
	var out []Answer
	for _, v := range values {
		f := strings.Fields(v)
		if len(f) != 3 {
			continue
		}
		at, err1 := strconv.ParseInt(f[1], 10, 64)
		end, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || at <= 0 || end <= 0 {
			continue
		}
		out = append(out, Answer{Bucket: f[0], GrantedAt: time.Unix(0, at), Answered: time.Unix(0, end)})
	}
	return out
}

// answers collects a call's exchanges.
type answers struct {
	mu   sync.Mutex
	list []Answer
}

// answered records one exchange. A grant of unknown time (from a host
// that does not send it) cannot be named, and is left as it was counted.
func (s *callStats) answered(bucket string, at, end time.Time) {
	if at.IsZero() {
		return
	}
	s.answers.mu.Lock()
	defer s.answers.mu.Unlock()
	s.answers.list = append(s.answers.list, Answer{Bucket: bucket, GrantedAt: at, Answered: end})
}

// answerList is the call's exchanges so far.
func (s *callStats) answerList() []Answer {
	s.answers.mu.Lock()
	defer s.answers.mu.Unlock()
	return append([]Answer(nil), s.answers.list...)
}

// answerValues is the call's AnsweredTrailer.
func (s *callStats) answerValues() []string {
	s.answers.mu.Lock()
	defer s.answers.mu.Unlock()
	out := make([]string, len(s.answers.list))
	for i, a := range s.answers.list {
		out[i] = a.String()
	}
	return out
}

package hellorfsim

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The account the simulator's credentials belong to (the original's
// my-purchases example user).
var account = map[string]any{"id": 14949528, "name": "didi"}

// intParam reads an optional integer parameter; a present value that is not
// an integer is a 1001 failure.
func intParam(q url.Values, name string) (int, bool, *reply) {
	v := q.Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false, fail(http.StatusBadRequest, CodeInvalidParam, name+" 必须是整数")
	}
	return n, true, nil
}

func requiredInt(q url.Values, name string) (int, *reply) {
	n, present, rep := intParam(q, name)
	if rep != nil {
		return 0, rep
	}
	if !present {
		return 0, fail(http.StatusBadRequest, CodeInvalidParam, "缺少参数 "+name)
	}
	return n, nil
}

// paging reads page and per_page with the endpoint's default page size.
// per_page above 100 is cut to 100: the document states no maximum, and a
// server that clamps is the usual behaviour.
func paging(q url.Values, def int) (int, int, *reply) {
	page, present, rep := intParam(q, "page")
	if rep != nil {
		return 0, 0, rep
	}
	if !present {
		page = 1
	}
	per, present, rep := intParam(q, "per_page")
	if rep != nil {
		return 0, 0, rep
	}
	if !present {
		per = def
	}
	if page < 1 || per < 1 {
		return 0, 0, fail(http.StatusBadRequest, CodeInvalidParam, "page 和 per_page 必须大于 0")
	}
	return page, min(per, 100), nil
}

func pageOf[T any](list []T, page, per int) []T {
	from := min((page-1)*per, len(list))
	return list[from:min(from+per, len(list))]
}

func (s *Sim) categories(_ string, _ url.Values, _ time.Time) *reply {
	bpmList := make([]Named, len(bpms))
	for i, b := range bpms {
		bpmList[i] = b.Named
	}
	// The original prints data as an array holding named members, which
	// is not JSON; the English reference's object is what is served.
	return ok(map[string]any{"genres": genres, "moods": moods, "instruments": instruments, "bpms": bpmList})
}

// audioJSON renders a track as search (withType=false) or detail answers
// show it; every URL is signed and expires.
func (s *Sim) audioJSON(t *track, host string, now time.Time, withType bool) map[string]any {
	m := map[string]any{
		"id":                  t.ID,
		"title":               t.Title,
		"bpm":                 t.BPM,
		"preview_mp3_url":     s.signObject(host, fmt.Sprintf("/media/preview/%d.mp3", t.ID), "", now),
		"waveform_url":        s.signObject(host, fmt.Sprintf("/media/wave/%d.png", t.ID), "", now),
		"origin_waveform_url": s.signObject(host, fmt.Sprintf("/media/wave/%d.json", t.ID), "", now),
		"artist":              t.Artist,
		"duration":            t.Duration,
		"description":         t.Description,
		"genres":              t.Genres,
		"moods":               t.Moods,
		"instruments":         t.Instruments,
	}
	if withType {
		m["type"] = t.Type
	}
	return m
}

func (s *Sim) search(host string, q url.Values, now time.Time) *reply {
	match, err := parseKeyword(q.Get("keyword"))
	if err != nil {
		return fail(http.StatusBadRequest, CodeInvalidParam, "keyword 格式错误: "+err.Error())
	}
	filters := map[string]int{}
	for _, name := range []string{"mood_id", "genre_id", "bpm_id", "duration_from", "duration_to", "instrument_id", "level_type", "is_vhifun", "can_purchase"} {
		n, present, rep := intParam(q, name)
		if rep != nil {
			return rep
		}
		if present {
			filters[name] = n
		}
	}
	if lt, ok := filters["level_type"]; ok && !slices.Contains(levelTypes, lt) {
		return fail(http.StatusBadRequest, CodeInvalidParam, "level_type 无效")
	}
	var bpm bpmRange
	if id, ok := filters["bpm_id"]; ok {
		var found bool
		if bpm, found = bpmCategory(id); !found {
			return fail(http.StatusBadRequest, CodeInvalidParam, "bpm_id 无效")
		}
	}
	page, per, rep := paging(q, 30)
	if rep != nil {
		return rep
	}
	var hits []*track
	for _, t := range s.tracks {
		if !match(t.tags) {
			continue
		}
		if id, ok := filters["mood_id"]; ok && !hasNamed(t.Moods, id) {
			continue
		}
		if id, ok := filters["genre_id"]; ok && !hasNamed(t.Genres, id) {
			continue
		}
		if id, ok := filters["instrument_id"]; ok && !hasNamed(t.Instruments, id) {
			continue
		}
		if _, ok := filters["bpm_id"]; ok && (t.BPM < bpm.Lo || t.BPM >= bpm.Hi) {
			continue
		}
		if d, ok := filters["duration_from"]; ok && t.Duration < d {
			continue
		}
		if d, ok := filters["duration_to"]; ok && t.Duration > d {
			continue
		}
		if lt, ok := filters["level_type"]; ok && t.LevelType != lt {
			continue
		}
		if v, ok := filters["is_vhifun"]; ok && v == 1 && !t.Vhifun {
			continue
		}
		if v, ok := filters["can_purchase"]; ok && v == 1 && !t.canPurchase() {
			continue
		}
		hits = append(hits, t)
	}
	list := []map[string]any{}
	for _, t := range pageOf(hits, page, per) {
		list = append(list, s.audioJSON(t, host, now, false))
	}
	return ok(map[string]any{"current_page": page, "per_page": per, "total": len(hits), "list": list})
}

func (s *Sim) audioFor(q url.Values) (*track, *reply) {
	id, rep := requiredInt(q, "audio_id")
	if rep != nil {
		return nil, rep
	}
	t, found := s.byID[id]
	if !found {
		return nil, fail(http.StatusNotFound, CodeAudioNotFound, "音乐不存在")
	}
	return t, nil
}

func (s *Sim) detail(host string, q url.Values, now time.Time) *reply {
	t, rep := s.audioFor(q)
	if rep != nil {
		return rep
	}
	perms := []map[string]any{}
	for _, p := range t.Permissions {
		perms = append(perms, map[string]any{"id": p.ID, "name": p.Name, "price": p.Price, "type": p.Type,
			"duration": hms(t.Duration), "bpm": t.BPM})
	}
	return ok(map[string]any{"audio": s.audioJSON(t, host, now, true), "permissions": perms})
}

func hms(sec int) string {
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}

func (s *Sim) purchase(host string, q url.Values, now time.Time) *reply {
	t, rep := s.audioFor(q)
	if rep != nil {
		return rep
	}
	pid, rep := requiredInt(q, "permission_id")
	if rep != nil {
		return rep
	}
	name := q.Get("warrant_name")
	if strings.TrimSpace(name) == "" {
		return fail(http.StatusBadRequest, CodeInvalidParam, "缺少参数 warrant_name")
	}
	perm, found := t.permission(pid)
	if !found {
		return fail(http.StatusBadRequest, CodePermissionNotFound, "该音乐不支持此授权")
	}
	p := &Purchase{ID: s.nextPurchase, AudioID: t.ID, PermissionID: perm.ID, PermissionName: perm.Name, PermissionType: perm.Type,
		AssetType: perm.AssetType, Price: perm.Price, WarrantName: name, ThirdUserID: q.Get("third_user_id"), CreatedAt: now}
	s.nextPurchase++
	s.purchases = append(s.purchases, p)
	return ok(map[string]any{"id": p.ID, "url": s.purchaseURL(host, p, now)})
}

func (s *Sim) purchaseURL(host string, p *Purchase, now time.Time) string {
	return s.signObject(host, fmt.Sprintf("/oss/audios/%d/%d.mp3", p.ID, p.AudioID), fmt.Sprintf("attachment;filename=%d.mp3", p.AudioID), now)
}

// purchaseByIDLocked finds a purchase of the account, made here or seeded.
func (s *Sim) purchaseByIDLocked(id int) (*Purchase, bool) {
	for _, list := range [][]*Purchase{s.purchases, s.seeded} {
		for _, p := range list {
			if p.ID == id {
				return p, true
			}
		}
	}
	return nil, false
}

func (s *Sim) purchaseFor(q url.Values) (*Purchase, *reply) {
	id, rep := requiredInt(q, "purchase_id")
	if rep != nil {
		return nil, rep
	}
	p, found := s.purchaseByIDLocked(id)
	if !found {
		return nil, fail(http.StatusNotFound, CodePurchaseNotFound, "购买记录不存在")
	}
	return p, nil
}

func stampOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.In(cst).Format(stamp)
}

func (s *Sim) myPurchases(_ string, q url.Values, _ time.Time) *reply {
	var from, to time.Time
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"begin_at", &from}, {"end_at", &to}} {
		if v := q.Get(b.name); v != "" {
			t, err := time.ParseInLocation(stamp, v, cst)
			if err != nil {
				return fail(http.StatusBadRequest, CodeInvalidParam, b.name+" 格式错误,例如 2017-01-01 23:23:23")
			}
			*b.t = t
		}
	}
	dl, hasDL, rep := intParam(q, "is_download")
	if rep != nil {
		return rep
	}
	if hasDL && dl != 1 && dl != 2 {
		return fail(http.StatusBadRequest, CodeInvalidParam, "is_download 只能是 1 或 2")
	}
	audio, hasAudio, rep := intParam(q, "audio_id")
	if rep != nil {
		return rep
	}
	page, per, rep := paging(q, 10)
	if rep != nil {
		return rep
	}
	all := append(append([]*Purchase(nil), s.seeded...), s.purchases...)
	slices.SortStableFunc(all, func(a, b *Purchase) int { return b.ID - a.ID }) // newest first
	var hits []*Purchase
	for _, p := range all {
		switch {
		case !from.IsZero() && p.CreatedAt.Before(from),
			!to.IsZero() && p.CreatedAt.After(to),
			hasDL && (dl == 1) == p.DownloadedAt.IsZero(),
			hasAudio && p.AudioID != audio:
			continue
		}
		hits = append(hits, p)
	}
	list := []map[string]any{}
	for _, p := range pageOf(hits, page, per) {
		list = append(list, map[string]any{
			"id":              p.ID,
			"plus_user":       account,
			"real_plus_user":  account,
			"third_user_id":   p.ThirdUserID,
			"plus_permission": map[string]any{"id": p.PermissionID, "name": p.PermissionName},
			"able_id":         p.AudioID,
			"able_type":       "audio",
			"asset_type":      p.AssetType,
			"warrant_name":    p.WarrantName,
			"download_at":     stampOrNil(p.DownloadedAt),
			"created_at":      stampOrNil(p.CreatedAt),
		})
	}
	// per_page is a string in the original's example answer; so here.
	return ok(map[string]any{"current_page": page, "per_page": strconv.Itoa(per), "total": len(hits), "list": list})
}

func (s *Sim) purchaseDetail(host string, q url.Values, now time.Time) *reply {
	p, rep := s.purchaseFor(q)
	if rep != nil {
		return rep
	}
	t := s.byID[p.AudioID]
	return ok(map[string]any{
		"audio": s.audioJSON(t, host, now, true),
		"purchase": map[string]any{
			"id": p.ID, "permission_id": p.PermissionID, "permission_name": p.PermissionName,
			"plus_user_id": account["id"], "real_plus_user_id": account["id"], "price": p.Price, "asset_type": p.AssetType,
			"warrant_name": p.WarrantName, "third_user_id": p.ThirdUserID,
			"fileSize":   fmt.Sprintf("%.1fMB", float64(s.opts.AudioSize)/(1<<20)),
			"created_at": stampOrNil(p.CreatedAt),
		},
	})
}

func (s *Sim) downloadWarrant(_ string, q url.Values, _ time.Time) *reply {
	p, rep := s.purchaseFor(q)
	if rep != nil {
		return rep
	}
	pu, tr := *p, s.byID[p.AudioID]
	return &reply{status: http.StatusOK, file: func(w http.ResponseWriter) {
		body, size := warrantPDF(&pu, tr, s.opts.WarrantSize, s.block)
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="warrant-%d.pdf"`, pu.ID))
		w.WriteHeader(http.StatusOK)
		_, _ = io.CopyBuffer(w, body, make([]byte, 64<<10)) // a write error means the client went away
	}}
}

func (s *Sim) purchaseDownload(host string, q url.Values, now time.Time) *reply {
	p, rep := s.purchaseFor(q)
	if rep != nil {
		return rep
	}
	return ok(map[string]any{"url": s.purchaseURL(host, p, now)})
}

func (s *Sim) markDownloaded(id int, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, found := s.purchaseByIDLocked(id); found && p.DownloadedAt.IsZero() {
		p.DownloadedAt = now
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// queryAnswer mirrors the parts of /api/ds/query's answer the tests look at.
type queryAnswer struct {
	Results map[string]struct {
		Status      int    `json:"status"`
		Error       string `json:"error"`
		ErrorSource string `json:"errorSource"`
		Frames      []struct {
			Schema struct {
				RefID string `json:"refId"`
				Meta  struct {
					Type        string `json:"type"`
					TypeVersion []int  `json:"typeVersion"`
				} `json:"meta"`
				Fields []struct {
					Name     string            `json:"name"`
					Type     string            `json:"type"`
					TypeInfo map[string]string `json:"typeInfo"`
					Labels   map[string]string `json:"labels"`
				} `json:"fields"`
			} `json:"schema"`
			Data struct {
				Values   []json.RawMessage `json:"values"`
				Entities []json.RawMessage `json:"entities"`
			} `json:"data"`
		} `json:"frames"`
	} `json:"results"`
}

const instantQuery = `{"queries":[{"refId":"A","datasource":{"uid":"prometheus","type":"prometheus"},"expr":"up","instant":true}],"from":"now-5m","to":"now"}`

func TestDSQueryInstantFrames(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "POST", "/api/ds/query", instantQuery, true)
	wantStatus(t, resp, body, http.StatusOK)

	if r := g.prom.lastRequest(); r.URL.Path != "/api/v1/query" || r.Form.Get("query") != "up" {
		t.Errorf("Prometheus was asked %s ?%s", r.URL.Path, r.URL.RawQuery)
	}
	ans := decode[queryAnswer](t, body)
	a, ok := ans.Results["A"]
	if !ok || a.Status != 200 || len(a.Frames) != 2 {
		t.Fatalf("results.A = %+v; body %s", a, body)
	}
	wantInstances := []string{"10.0.0.1:8001", "10.0.0.2:8001"}
	wantValues := []string{"[1]", "[0]"}
	for i, f := range a.Frames {
		s := f.Schema
		if s.RefID != "A" || s.Meta.Type != "numeric-multi" || len(s.Meta.TypeVersion) != 2 || s.Meta.TypeVersion[1] != 1 {
			t.Errorf("frame %d schema = %+v", i, s)
		}
		if len(s.Fields) != 2 || s.Fields[0].Name != "Time" || s.Fields[0].Type != "time" ||
			s.Fields[0].TypeInfo["frame"] != "time.Time" || s.Fields[1].Name != "Value" ||
			s.Fields[1].Type != "number" || s.Fields[1].TypeInfo["frame"] != "float64" {
			t.Fatalf("frame %d fields = %+v", i, s.Fields)
		}
		labels := s.Fields[1].Labels
		if labels["instance"] != wantInstances[i] || labels["job"] != "django-app" || labels["__name__"] != "up" {
			t.Errorf("frame %d labels = %v", i, labels)
		}
		if len(f.Data.Values) != 2 || string(f.Data.Values[0]) != "[1764784800123]" || string(f.Data.Values[1]) != wantValues[i] {
			t.Errorf("frame %d values = %s", i, f.Data.Values)
		}
	}
}

func TestDSQueryRangeUsesTimeIntervalAsStep(t *testing.T) {
	g := newTestGrafana(t)
	q := `{"queries":[{"refId":"B","datasource":{"uid":"prometheus"},"expr":"sum(up)","range":true}],"from":"now-1h","to":"now"}`
	before := time.Now()
	resp, body := g.call(t, "POST", "/api/ds/query", q, true)
	wantStatus(t, resp, body, http.StatusOK)

	r := g.prom.lastRequest()
	if r.URL.Path != "/api/v1/query_range" || r.Form.Get("step") != "15" || r.Form.Get("query") != "sum(up)" {
		t.Errorf("Prometheus was asked %s ?%s", r.URL.Path, r.URL.RawQuery)
	}
	start, end := r.Form.Get("start"), r.Form.Get("end")
	if !strings.HasPrefix(start, "17") || start >= end {
		t.Errorf("start %s end %s", start, end)
	}
	if got := mustParseSeconds(t, end) - mustParseSeconds(t, start); got < 3585 || got > 3600 {
		t.Errorf("range is %v s, want about an hour (now-1h..now at %v)", got, before)
	}

	b := decode[queryAnswer](t, body).Results["B"]
	if len(b.Frames) != 1 || b.Frames[0].Schema.Meta.Type != "timeseries-multi" {
		t.Fatalf("results.B = %+v", b)
	}
	d := b.Frames[0].Data
	// NaN travels as null with its index under entities, as Grafana encodes it.
	if string(d.Values[0]) != "[1764784800000,1764784815000,1764784830000]" || string(d.Values[1]) != "[1.5,null,2]" {
		t.Errorf("values = %s", d.Values)
	}
	if len(d.Entities) != 2 || string(d.Entities[1]) != `{"NaN":[1]}` {
		t.Errorf("entities = %s", d.Entities)
	}
}

func mustParseSeconds(t *testing.T, s string) float64 {
	t.Helper()
	var f float64
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDSQueryPrometheusErrorIs400(t *testing.T) {
	g := newTestGrafana(t)
	q := strings.Replace(instantQuery, `"expr":"up"`, `"expr":"bad("`, 1)
	resp, body := g.call(t, "POST", "/api/ds/query", q, true)
	wantStatus(t, resp, body, http.StatusBadRequest)
	a := decode[queryAnswer](t, body).Results["A"]
	if a.Status != 400 || !strings.Contains(a.Error, "parse error: unclosed left parenthesis") || len(a.Frames) != 0 {
		t.Errorf("results.A = %+v", a)
	}
}

func TestDSQueryOneFailingQueryMakesIt400(t *testing.T) {
	g := newTestGrafana(t)
	q := `{"queries":[
		{"refId":"A","datasource":{"uid":"prometheus"},"expr":"up","instant":true},
		{"refId":"B","datasource":{"uid":"prometheus"},"expr":"bad(","instant":true}],"from":"now-5m","to":"now"}`
	resp, body := g.call(t, "POST", "/api/ds/query", q, true)
	wantStatus(t, resp, body, http.StatusBadRequest)
	ans := decode[queryAnswer](t, body)
	if len(ans.Results["A"].Frames) != 2 || ans.Results["B"].Status != 400 {
		t.Errorf("results = %s", body)
	}
}

func TestDSQueryBadRequests(t *testing.T) {
	g := newTestGrafana(t)
	cases := map[string]string{
		"unknown datasource": strings.Replace(instantQuery, `"uid":"prometheus"`, `"uid":"loki"`, 1),
		"no datasource":      `{"queries":[{"refId":"A","expr":"up","instant":true}],"from":"now-5m","to":"now"}`,
		"no queries":         `{"queries":[],"from":"now-5m","to":"now"}`,
		"bad time":           strings.Replace(instantQuery, `"now-5m"`, `"yesterday"`, 1),
		"not JSON":           `{"queries":`,
	}
	for name, q := range cases {
		resp, body := g.call(t, "POST", "/api/ds/query", q, true)
		if resp.StatusCode != http.StatusBadRequest || decode[map[string]any](t, body)["message"] == "" {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	resp, body := g.call(t, "POST", "/api/ds/query", cases["unknown datasource"], true)
	if msg := decode[map[string]string](t, body)["message"]; !strings.Contains(msg, "loki") {
		t.Errorf("unknown datasource: %d message %q does not name it", resp.StatusCode, msg)
	}
	resp, body = g.call(t, "POST", "/api/ds/query", instantQuery, false)
	wantStatus(t, resp, body, http.StatusUnauthorized)
}

func TestDSQueryPostMethodFromJSONData(t *testing.T) {
	g := newTestGrafana(t)
	ds := &datasource{UID: "p", JSONData: map[string]any{"httpMethod": "POST"}}
	ds.base = mustURL(t, g.prom.URL)
	if _, failure := (&server{client: http.DefaultClient}).askPrometheus(t.Context(), ds, "api/v1/query", map[string][]string{"query": {"up"}}); failure != nil {
		t.Fatal(failure.Error)
	}
	if r := g.prom.lastRequest(); r.Method != "POST" || r.PostForm.Get("query") != "up" {
		t.Errorf("Prometheus saw %s with form %v", r.Method, r.PostForm)
	}
}

func TestTimeParams(t *testing.T) {
	now := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	cases := map[string]time.Time{
		"now":           now,
		"now-5m":        now.Add(-5 * time.Minute),
		"now-2d":        now.Add(-48 * time.Hour),
		"1764784800123": time.UnixMilli(1764784800123),
	}
	for in, want := range cases {
		got, err := timeParam(in).resolve(now, "now")
		if err != nil || !got.Equal(want) {
			t.Errorf("%q -> %v, %v; want %v", in, got, err, want)
		}
	}
	var tp timeParam
	if err := json.Unmarshal([]byte(`1764784800123`), &tp); err != nil || tp != "1764784800123" {
		t.Errorf("numeric time: %q %v", tp, err)
	}
	if _, err := timeParam("now-5x").resolve(now, "now"); err == nil {
		t.Error("now-5x accepted")
	}
}

func TestRangeStepIsCoarsenedForLongRanges(t *testing.T) {
	ds := &datasource{JSONData: map[string]any{"timeInterval": "15s"}}
	now := time.Now()
	if got := rangeStep(ds, now.Add(-time.Hour), now); got != 15*time.Second {
		t.Errorf("1h step = %v", got)
	}
	if got := rangeStep(ds, now.Add(-30*24*time.Hour), now); (30*24*time.Hour)/got > maxPoints {
		t.Errorf("30d step %v gives more than %d points", got, maxPoints)
	}
	if got := rangeStep(&datasource{}, now.Add(-time.Hour), now); got != defaultStep {
		t.Errorf("default step = %v", got)
	}
}

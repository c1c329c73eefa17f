package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestProxyForwardsPathAndQuery(t *testing.T) {
	g := newTestGrafana(t)
	for _, path := range []string{
		"/api/datasources/proxy/uid/prometheus/api/v1/labels?match%5B%5D=up&start=1",
		"/api/datasources/proxy/1/api/v1/labels?match%5B%5D=up&start=1",
	} {
		resp, body := g.call(t, "GET", path, "", true)
		// The upstream's status, headers and body come back as they are.
		wantStatus(t, resp, body, http.StatusTeapot)
		if resp.Header.Get("X-Upstream") != "fake-prometheus" || resp.Header.Get("X-Bootstrap-Lab") != "stand-in" {
			t.Errorf("%s: headers %v", path, resp.Header)
		}
		got := decode[map[string]string](t, body)
		if got["path"] != "/api/v1/labels" || got["query"] != "match%5B%5D=up&start=1" || got["method"] != "GET" {
			t.Errorf("%s: upstream saw %v", path, got)
		}
		if got["authorization"] != "" {
			t.Errorf("%s: the admin's Authorization reached the data source", path)
		}
	}
}

func TestProxyAnyMethod(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "POST", "/api/datasources/proxy/uid/prometheus/api/v1/admin/tsdb/snapshot", `{}`, true)
	wantStatus(t, resp, body, http.StatusTeapot)
	if got := decode[map[string]string](t, body); got["method"] != "POST" || got["path"] != "/api/v1/admin/tsdb/snapshot" {
		t.Errorf("upstream saw %v", got)
	}
}

func TestProxyUnknownDatasourceAndUnreachable(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/datasources/proxy/uid/nope/api/v1/query", "", true)
	wantStatus(t, resp, body, http.StatusNotFound)

	resp, body = g.call(t, "GET", "/api/datasources/proxy/uid/prometheus/api/v1/query", "", false)
	wantStatus(t, resp, body, http.StatusUnauthorized)

	g.prom.Close() // the data source goes away
	resp, body = g.call(t, "GET", "/api/datasources/proxy/uid/prometheus/api/v1/query?query=up", "", true)
	wantStatus(t, resp, body, http.StatusBadGateway)
	if msg := decode[map[string]string](t, body)["message"]; msg != "Bad Gateway" {
		t.Errorf("message %q", msg)
	}
}

func TestProxyKeepsBasePathAndRefusesClimbing(t *testing.T) {
	var seen string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL.Path
	}))
	defer upstream.Close()
	base, _ := url.Parse(upstream.URL + "/prometheus/")
	u, err := joinURL(base, "api/v1/query")
	if err != nil || u.Path != "/prometheus/api/v1/query" {
		t.Fatalf("joinURL = %v, %v", u, err)
	}
	if _, err := joinURL(base, "api/%2e%2e/secret"); err == nil {
		t.Error("joinURL accepted an escaped .. segment")
	}
	if _, err := http.Get(u.String()); err != nil || seen != "/prometheus/api/v1/query" {
		t.Errorf("upstream saw %q (%v)", seen, err)
	}
}

func TestPathAfter(t *testing.T) {
	cases := []struct {
		path string
		n    int
		want string
	}{
		{"/api/datasources/proxy/uid/prometheus/api/v1/query", 5, "api/v1/query"},
		{"/api/datasources/proxy/uid/prometheus", 5, ""},
		{"/api/datasources/proxy/1/api/v1/series%2Fx", 4, "api/v1/series%2Fx"},
	}
	for _, c := range cases {
		if got := pathAfter(c.path, c.n); got != c.want {
			t.Errorf("pathAfter(%q, %d) = %q, want %q", c.path, c.n, got, c.want)
		}
	}
}

package main

import (
	"net/http"
	"strings"
	"testing"
)

func TestHealthNeedsNoAuth(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/health", "", false)
	wantStatus(t, resp, body, http.StatusOK)
	if got, want := string(body), `{"database":"ok","version":"13.2.3","commit":"bootstrap-lab-stand-in"}`; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if resp.Header.Get("X-Bootstrap-Lab") != "stand-in" {
		t.Error("no X-Bootstrap-Lab: stand-in header")
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestAPINeedsAdminBasicAuth(t *testing.T) {
	g := newTestGrafana(t)

	resp, body := g.call(t, "GET", "/api/datasources", "", false)
	wantStatus(t, resp, body, http.StatusUnauthorized)
	if msg := decode[map[string]string](t, body)["message"]; msg != "Unauthorized" {
		t.Errorf("no credentials: message %q", msg)
	}
	if resp.Header.Get("X-Bootstrap-Lab") != "stand-in" {
		t.Error("401 without the stand-in header")
	}

	for _, cred := range [][2]string{{testUser, "wrong"}, {"admin", testPassword}, {testUser, testPassword + "x"}} {
		req, _ := http.NewRequest("GET", g.URL+"/api/datasources", nil)
		req.SetBasicAuth(cred[0], cred[1])
		resp, body = do(t, req)
		wantStatus(t, resp, body, http.StatusUnauthorized)
		if msg := decode[map[string]string](t, body)["message"]; msg != "Invalid username or password" {
			t.Errorf("%s/%s: message %q", cred[0], cred[1], msg)
		}
	}

	// An unknown API path asks for credentials before saying it does not exist.
	resp, body = g.call(t, "GET", "/api/nothing-here", "", false)
	wantStatus(t, resp, body, http.StatusUnauthorized)
	resp, body = g.call(t, "GET", "/api/nothing-here", "", true)
	wantStatus(t, resp, body, http.StatusNotFound)
	if msg := decode[map[string]string](t, body)["message"]; msg != "Not found" {
		t.Errorf("unknown path: message %q", msg)
	}
	resp, body = g.call(t, "GET", "/somewhere", "", false)
	wantStatus(t, resp, body, http.StatusNotFound)
}

func TestUser(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/user", "", true)
	wantStatus(t, resp, body, http.StatusOK)
	u := decode[map[string]any](t, body)
	if u["login"] != testUser || u["isGrafanaAdmin"] != true {
		t.Errorf("user = %v", u)
	}
}

func TestDatasourcesList(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/datasources", "", true)
	wantStatus(t, resp, body, http.StatusOK)
	list := decode[[]map[string]any](t, body)
	if len(list) != 1 {
		t.Fatalf("want 1 datasource, got %s", body)
	}
	ds := list[0]
	want := map[string]any{
		"id": 1.0, "uid": "prometheus", "orgId": 1.0, "name": "Prometheus", "type": "prometheus",
		"typeName": "Prometheus", "access": "proxy", "url": g.prom.URL, "isDefault": true, "readOnly": true,
	}
	for k, v := range want {
		if ds[k] != v {
			t.Errorf("%s = %#v, want %#v", k, ds[k], v)
		}
	}
	if jd, _ := ds["jsonData"].(map[string]any); jd["timeInterval"] != "15s" {
		t.Errorf("jsonData = %#v", ds["jsonData"])
	}
}

func TestDatasourceLookups(t *testing.T) {
	g := newTestGrafana(t)
	for _, path := range []string{"/api/datasources/uid/prometheus", "/api/datasources/name/Prometheus", "/api/datasources/1"} {
		resp, body := g.call(t, "GET", path, "", true)
		wantStatus(t, resp, body, http.StatusOK)
		if ds := decode[map[string]any](t, body); ds["uid"] != "prometheus" || ds["name"] != "Prometheus" {
			t.Errorf("%s: %s", path, body)
		}
	}
	for _, path := range []string{"/api/datasources/uid/nope", "/api/datasources/name/Nope", "/api/datasources/7"} {
		resp, body := g.call(t, "GET", path, "", true)
		wantStatus(t, resp, body, http.StatusNotFound)
		if msg := decode[map[string]string](t, body)["message"]; msg != "Data source not found" {
			t.Errorf("%s: message %q", path, msg)
		}
	}
}

func TestRequestLogIsLogfmtWithoutSecrets(t *testing.T) {
	g := newTestGrafana(t)
	g.call(t, "GET", "/api/health", "", false)
	g.call(t, "GET", "/api/datasources?x=1", "", true)
	logs := g.logs.String()
	for _, want := range []string{
		`logger=http.server t=`,
		` level=info msg="Request Completed" method=GET path=/api/health status=200 `,
		` msg="Request Completed" method=GET path=/api/datasources status=200 `,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if lines := strings.Count(logs, "\n"); lines != 2 {
		t.Errorf("want 2 log lines, got %d:\n%s", lines, logs)
	}
	for _, secret := range []string{testPassword, "Authorization", "Basic "} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
}

func TestLogfmtValueQuotes(t *testing.T) {
	cases := map[string]string{"/api/health": "/api/health", "": `""`, "a b": `"a b"`, `x"y`: `"x\"y"`, "a\nb": `"a\nb"`}
	for in, want := range cases {
		if got := logfmtValue(in); got != want {
			t.Errorf("logfmtValue(%q) = %s, want %s", in, got, want)
		}
	}
}

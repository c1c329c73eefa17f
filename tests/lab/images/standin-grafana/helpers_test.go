package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const (
	testUser     = "lab-admin"
	testPassword = "correct horse battery"
)

// fakePrometheus answers /api/v1/query with a vector of two series, /api/v1/query_range with a
// matrix of one, a Prometheus error for the expression "bad(", and echoes any other request.
type fakePrometheus struct {
	*httptest.Server
	mu   sync.Mutex
	last *http.Request // the last request, with its form parsed
}

func newFakePrometheus(t *testing.T) *fakePrometheus {
	t.Helper()
	fp := &fakePrometheus{}
	fp.Server = httptest.NewServer(http.HandlerFunc(fp.serve))
	t.Cleanup(fp.Close)
	return fp
}

func (fp *fakePrometheus) lastRequest() *http.Request {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.last
}

func (fp *fakePrometheus) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	fp.mu.Lock()
	fp.last = r
	fp.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Form.Get("query") == "bad(" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}`)
		return
	}
	switch r.URL.Path {
	case "/api/v1/query":
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[
			{"metric":{"__name__":"up","instance":"10.0.0.1:8001","job":"django-app"},"value":[1764784800.123,"1"]},
			{"metric":{"__name__":"up","instance":"10.0.0.2:8001","job":"django-app"},"value":[1764784800.123,"0"]}]}}`)
	case "/api/v1/query_range":
		io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[
			{"metric":{"job":"django-app"},"values":[[1764784800,"1.5"],[1764784815,"NaN"],[1764784830,"2"]]}]}}`)
	default:
		w.Header().Set("X-Upstream", "fake-prometheus")
		w.WriteHeader(http.StatusTeapot)
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
			"authorization": r.Header.Get("Authorization"),
		})
	}
}

// writeFile writes content under dir, making parent directories.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const appDashboard = `{"uid":"crypto-exchange-app","title":"Crypto Exchange: Django app","schemaVersion":39,
"version":1,"tags":["crypto-exchange"],"panels":[{"id":1,"type":"timeseries","title":"Requests"}]}`

// provisioningFixture lays out what the product's manifests mount: the two provisioning files
// and a dashboards directory shaped like a ConfigMap volume (x.json -> ..data/x.json).
func provisioningFixture(t *testing.T, promURL string) (provDir, dashDir string) {
	t.Helper()
	root := t.TempDir()
	provDir = filepath.Join(root, "provisioning")
	dashDir = filepath.Join(root, "dashboards")

	writeFile(t, provDir, "datasources/datasources.yaml", `apiVersion: 1
datasources:
  - name: Prometheus
    uid: prometheus
    type: prometheus
    access: proxy
    url: `+promURL+`
    isDefault: true
    editable: false
    jsonData:
      timeInterval: 15s
`)
	writeFile(t, provDir, "dashboards/dashboards.yaml", `apiVersion: 1
providers:
  - name: crypto-exchange
    folder: Crypto Exchange
    type: file
    disableDeletion: true
    allowUiUpdates: false
    options:
      path: `+dashDir+`
`)
	writeFile(t, dashDir, "..2026_12_03_18_00_00.1/crypto-exchange-app.json", appDashboard)
	writeFile(t, dashDir, "..2026_12_03_18_00_00.1/no-uid.json", `{"title":"No uid here","tags":[]}`)
	mustSymlink(t, "..2026_12_03_18_00_00.1", filepath.Join(dashDir, "..data"))
	mustSymlink(t, "..data/crypto-exchange-app.json", filepath.Join(dashDir, "crypto-exchange-app.json"))
	mustSymlink(t, "..data/no-uid.json", filepath.Join(dashDir, "no-uid.json"))
	return provDir, dashDir
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// testGrafana is the stand-in behind an httptest server, with its log captured.
type testGrafana struct {
	*httptest.Server
	prom *fakePrometheus
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestGrafana(t *testing.T) *testGrafana {
	t.Helper()
	prom := newFakePrometheus(t)
	provDir, _ := provisioningFixture(t, prom.URL)
	prov, err := loadProvisioning(provDir)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv := httptest.NewServer(newServer(prov, testUser, testPassword, newLogger(logs)).handler())
	t.Cleanup(srv.Close)
	return &testGrafana{Server: srv, prom: prom, logs: logs}
}

// call makes a request as the admin (auth true) or without credentials.
func (g *testGrafana) call(t *testing.T, method, path, body string, auth bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.SetBasicAuth(testUser, testPassword)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, data)
	}
	return v
}

func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

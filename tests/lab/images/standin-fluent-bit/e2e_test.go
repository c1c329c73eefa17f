package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"bootstrap.lab/images/internal/testtls"
)

// TestEndToEnd runs the program on the product's configuration, with the paths and addresses
// of the test: a log file that appears after the start reaches the fake Elasticsearch, enriched.
func TestEndToEnd(t *testing.T) {
	d := newLogDirs(t)
	state := t.TempDir()
	api, _ := fakePods(t, true)
	es := &fakeES{}
	esSrv := httptest.NewServer(es)
	defer esSrv.Close()
	esCfg := esConfigFor(t, esSrv)

	text := productConfig
	for old, new := range map[string]string{
		"Flush         5":                                      "Flush         0.05",
		"HTTP_Listen   0.0.0.0":                                "HTTP_Listen   127.0.0.1",
		"HTTP_Port     2020":                                   "HTTP_Port     0",
		"/var/log/containers/*.log":                            filepath.Join(d.containers, "*.log"),
		"/var/lib/fluent-bit/tail.db":                          filepath.Join(state, "tail.db"),
		"Refresh_Interval  10":                                 "Refresh_Interval  0.05",
		"https://kubernetes.default.svc:443":                   api.URL,
		"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt": testtls.WriteFile(t, "kube-ca.crt", testtls.CertPEM(api)),
		"/var/run/secrets/kubernetes.io/serviceaccount/token":  testtls.WriteFile(t, "token", "pod-token"),
		"Kube_Tag_Prefix     kube.var.log.containers.":         "Kube_Tag_Prefix     kube." + strings.TrimPrefix(strings.ReplaceAll(d.containers, "/", "."), ".") + ".",
		"Host                10.213.7.13":                      "Host                " + esCfg.host,
		"Port                9200":                             fmt.Sprintf("Port                %d", esCfg.port),
	} {
		text = strings.Replace(text, old, new, 1)
	}
	text = text[:strings.Index(text, "    tls ")] + "    tls                 Off\n"
	config := writeConfig(t, text)

	old := d.addContainer(t, "old-pod", cri("written before the start"))
	env := envOf(map[string]string{"ES_USER": "fluent-bit", "ES_PASSWORD": "s3cret-password"})
	stderr := &syncLog{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"-c", config}, io.Discard, stderr, env) }()
	port := waitFor(t, stderr, regexp.MustCompile(`listen iface=127\.0\.0\.1 tcp_port=(\d+)`))

	appendTo(t, old, cri("written after the start"))
	d.addContainer(t, "django-7d9f", cri(`{"level":"info","msg":"trade"}`)+
		"2026-12-03T18:00:01.000000001Z stdout P a long \n"+"2026-12-03T18:00:01.5Z stdout F line\n")
	d.addContainer(t, "noisy", cri("excluded"))

	docs := waitForDocs(t, es, 3)
	joined := strings.Join(docs, "\n")
	if strings.Contains(joined, "written before the start") || strings.Contains(joined, "excluded") {
		t.Fatalf("documents:\n%s", joined)
	}
	wantDoc := `{"@timestamp":"2026-12-03T18:00:00.500Z","stream":"stdout","_p":"F","log_processed":{"level":"info","msg":"trade"},` +
		`"kubernetes":{"pod_name":"django-7d9f","namespace_name":"crypto-exchange","pod_id":"pod-uid-1",` +
		`"labels":{"app":"django","app_kubernetes_io/name":"django"},"host":"worker","container_name":"django",` +
		`"docker_id":"` + containerID + `","container_hash":"lab/django@sha256:abc","container_image":"lab/django:1"}}`
	for _, want := range []string{wantDoc, `{"@timestamp":"2026-12-03T18:00:01.000Z","stream":"stdout","_p":"F","log":"a long line",`,
		`"log":"written after the start","kubernetes":{"pod_name":"old-pod"`} {
		if !strings.Contains(joined, want) {
			t.Errorf("no document with\n%s\nin\n%s", want, joined)
		}
	}
	for _, r := range es.sent() {
		if r.user != "fluent-bit" || r.password != "s3cret-password" {
			t.Fatalf("basic auth %q", r.user)
		}
	}

	resp, err := http.Get("http://127.0.0.1:" + port + "/api/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health %d", resp.StatusCode)
	}

	cancel()
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d", code)
	}
	logText := stderr.String()
	if !regexp.MustCompile(`^\[\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}\] \[ info\] \[fluent bit\] version=5\.1\.1 \(bootstrap lab stand-in\), `).MatchString(logText) {
		t.Fatalf("first line:\n%s", logText)
	}
	if strings.Contains(logText, "s3cret-password") {
		t.Fatal("the log shows ES_PASSWORD")
	}
	if _, err := os.Stat(filepath.Join(state, "tail.db.standin.json")); err != nil {
		t.Fatalf("offsets not saved: %v", err)
	}
}

func waitFor(t *testing.T, logs *syncLog, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("never logged %s:\n%s", re, logs)
	return ""
}

// waitForDocs returns the documents (not the action lines) once n have arrived.
func waitForDocs(t *testing.T, es *fakeES, n int) []string {
	t.Helper()
	var docs []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		docs = docs[:0]
		for _, r := range es.sent() {
			lines := strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
			for i := 1; i < len(lines); i += 2 {
				var action map[string]map[string]string
				json.Unmarshal([]byte(lines[i-1]), &action)
				if action["create"]["_index"] != "k8s-containers" {
					t.Fatalf("action line %s", lines[i-1])
				}
				docs = append(docs, lines[i])
			}
		}
		if len(docs) >= n {
			return docs
		}
	}
	t.Fatalf("%d documents arrived, want %d", len(docs), n)
	return nil
}

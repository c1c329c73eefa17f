package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"bootstrap.lab/images/internal/kubeapi"
	"bootstrap.lab/images/internal/testtls"
)

const containerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

const djangoPod = `{"metadata":{"name":"django-7d9f","namespace":"crypto-exchange","uid":"pod-uid-1",
  "labels":{"app":"django","app.kubernetes.io/name":"django"},"annotations":{"note":"x"}},
  "spec":{"nodeName":"worker","containers":[{"name":"django","image":"lab/django:1"}]},
  "status":{"containerStatuses":[{"name":"django","image":"lab/django:1","imageID":"lab/django@sha256:abc"}]}}`

const excludedPod = `{"metadata":{"name":"noisy","namespace":"crypto-exchange","uid":"pod-uid-2",
  "annotations":{"fluentbit.io/exclude":"true"}},"spec":{"nodeName":"worker"}}`

// fakePods is a Kubernetes API that knows two pods and counts the requests.
func fakePods(t *testing.T, tls bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer pod-token" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"kind":"Status","reason":"Unauthorized","message":"Unauthorized"}`)
			return
		}
		switch r.URL.Path {
		case "/api/v1/namespaces/crypto-exchange/pods/django-7d9f":
			io.WriteString(w, djangoPod)
		case "/api/v1/namespaces/crypto-exchange/pods/noisy":
			io.WriteString(w, excludedPod)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"kind":"Status","reason":"NotFound","message":"pods not found"}`)
		}
	})
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(handler)
	} else {
		srv = httptest.NewServer(handler)
	}
	t.Cleanup(srv.Close)
	return srv, &calls
}

func productFilterConfig() kubeFilterConfig {
	return kubeFilterConfig{match: "kube.*", tagPrefix: "kube.var.log.containers.", mergeLog: true,
		mergeLogKey: "log_processed", labels: true, exclude: true}
}

func newTestFilter(t *testing.T, cfg kubeFilterConfig) (*kubeFilter, *atomic.Int32, *strings.Builder) {
	t.Helper()
	srv, calls := fakePods(t, false)
	api, err := kubeapi.New(kubeapi.Options{BaseURL: srv.URL, TokenFile: testtls.WriteFile(t, "token", "pod-token\n"), HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	return newKubeFilter(cfg, api, newFlbLogger(&logs, levelDebug)), calls, &logs
}

func kubeRecord(pod, log string) record {
	return record{tag: "kube.var.log.containers." + pod + "_crypto-exchange_django-" + containerID + ".log",
		body: criBody("stdout", "F", log)}
}

func TestKubernetesMetadataAndMergeLog(t *testing.T) {
	f, calls, _ := newTestFilter(t, productFilterConfig())
	rec := kubeRecord("django-7d9f", ` {"level":"info","msg":"trade","n":1.50} `)
	if !f.apply(&rec) {
		t.Fatal("dropped")
	}
	want := `{"stream":"stdout","_p":"F","log_processed":{"level":"info","msg":"trade","n":1.50},` +
		`"kubernetes":{"pod_name":"django-7d9f","namespace_name":"crypto-exchange","pod_id":"pod-uid-1",` +
		`"labels":{"app":"django","app.kubernetes.io/name":"django"},"host":"worker","container_name":"django",` +
		`"docker_id":"` + containerID + `","container_hash":"lab/django@sha256:abc","container_image":"lab/django:1"}}`
	if got := mustJSON(t, rec.body); got != want {
		t.Fatalf("record\n%s\nwant\n%s", got, want)
	}
	// Not JSON: log stays; the pod comes from the cache.
	rec = kubeRecord("django-7d9f", "plain text {not json}")
	f.apply(&rec)
	if v, _ := rec.body.get("log"); v != "plain text {not json}" {
		t.Fatalf("a plain log line changed: %v", rec.body)
	}
	if _, ok := rec.body.get("log_processed"); ok {
		t.Fatal("log_processed for a plain line")
	}
	if calls.Load() != 1 {
		t.Fatalf("%d API calls, want 1 (cached)", calls.Load())
	}
}

func TestKeepLogOnAndNoMergeKey(t *testing.T) {
	cfg := productFilterConfig()
	cfg.keepLog, cfg.mergeLogKey, cfg.labels, cfg.annotations = true, "", false, true
	f, _, _ := newTestFilter(t, cfg)
	rec := kubeRecord("django-7d9f", `{"level":"warn"}`)
	f.apply(&rec)
	got := mustJSON(t, rec.body)
	if !strings.HasPrefix(got, `{"stream":"stdout","_p":"F","log":"{\"level\":\"warn\"}","level":"warn","kubernetes":`) ||
		strings.Contains(got, `"labels"`) || !strings.Contains(got, `"annotations":{"note":"x"}`) {
		t.Fatalf("record %s", got)
	}
}

func TestExcludedPodsAreDroppedAndAPIFailuresStillShip(t *testing.T) {
	f, _, logs := newTestFilter(t, productFilterConfig())
	rec := kubeRecord("noisy", "spam")
	if f.apply(&rec) {
		t.Fatal("a pod annotated fluentbit.io/exclude: \"true\" was shipped")
	}
	rec = kubeRecord("gone", "last words")
	if !f.apply(&rec) {
		t.Fatal("dropped when the API failed")
	}
	want := `"kubernetes":{"pod_name":"gone","namespace_name":"crypto-exchange","container_name":"django","docker_id":"` + containerID + `"}`
	if got := mustJSON(t, rec.body); !strings.Contains(got, want) {
		t.Fatalf("record %s", got)
	}
	if !strings.Contains(logs.String(), "[ warn] [filter:kubernetes:kubernetes.0] could not get meta for pod crypto-exchange/gone") {
		t.Fatalf("log:\n%s", logs)
	}
	// A tag that is not a container log passes unchanged.
	rec = record{tag: "kube.something.else", body: object{{"log", "x"}}}
	if !f.apply(&rec) || len(rec.body) != 1 {
		t.Fatalf("%v", rec.body)
	}
}

func TestPodCacheExpires(t *testing.T) {
	f, calls, _ := newTestFilter(t, productFilterConfig())
	now := time.Now()
	f.now = func() time.Time { return now }
	rec := kubeRecord("django-7d9f", "a")
	f.apply(&rec)
	now = now.Add(podCacheTTL + time.Second)
	f.apply(&rec)
	if calls.Load() != 2 {
		t.Fatalf("%d calls, want 2 after the cache expired", calls.Load())
	}
}

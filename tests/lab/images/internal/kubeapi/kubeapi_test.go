package kubeapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"bootstrap.lab/images/internal/testtls"
)

// The API's CA written as a file, as the kubelet projects ca.crt.
func caFileOf(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	return testtls.WriteFile(t, "ca.crt", testtls.CertPEM(srv))
}

func TestGetJSONVerifiesTLSAndRereadsTheToken(t *testing.T) {
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		if r.URL.Path != "/api/v1/namespaces/ns/pods/p" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `{"metadata":{"name":"p","uid":"u1","labels":{"app":"x"}},"spec":{"nodeName":"worker"}}`)
	}))
	defer srv.Close()
	tokenFile := testtls.WriteFile(t, "token", "first\n")
	c, err := New(Options{BaseURL: srv.URL + "/", TokenFile: tokenFile, CAFile: caFileOf(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	var pod Pod
	if err := c.GetJSON(context.Background(), "/api/v1/namespaces/ns/pods/p", &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Metadata.UID != "u1" || pod.Spec.NodeName != "worker" || pod.Metadata.Labels["app"] != "x" {
		t.Fatalf("decoded %+v", pod)
	}
	os.WriteFile(tokenFile, []byte("rotated"), 0o600)
	if err := c.GetJSON(context.Background(), "/api/v1/namespaces/ns/pods/p", &pod); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "Bearer first,Bearer rotated" {
		t.Fatalf("tokens sent: %q", seen)
	}
}

func TestGetJSONRefusesAnUnknownCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c, err := New(Options{BaseURL: srv.URL, CAFile: testtls.WriteFile(t, "other.crt", testtls.OtherCA(t))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.GetJSON(context.Background(), "/x", &struct{}{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want a certificate error, got %v", err)
	}
}

func TestNon2xxCarriesTheStatusMessage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"kind":"Status","status":"Failure","reason":"NotFound","message":"ingressclasses.networking.k8s.io \"nginx\" not found","code":404}`)
	}))
	defer srv.Close()
	c, _ := New(Options{BaseURL: srv.URL, HTTPClient: srv.Client()})
	err := c.GetJSON(context.Background(), "/apis/networking.k8s.io/v1/ingressclasses/nginx", &IngressClass{})
	if !IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
	want := `GET /apis/networking.k8s.io/v1/ingressclasses/nginx: 404 NotFound: ingressclasses.networking.k8s.io "nginx" not found`
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

func TestPutJSONSendsTheObject(t *testing.T) {
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		json.NewDecoder(r.Body).Decode(&got)
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	c, _ := New(Options{BaseURL: srv.URL, HTTPClient: srv.Client()})
	if err := c.PutJSON(context.Background(), "/x", map[string]any{"metadata": map[string]any{"resourceVersion": "7"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got["metadata"].(map[string]any)["resourceVersion"] != "7" {
		t.Fatalf("sent %v", got)
	}
}

func TestIngressKeepsItsRawJSONAndIntOrString(t *testing.T) {
	var list IngressList
	raw := `{"items":[{"metadata":{"name":"i"},"spec":{"rules":[]},"extra":1}]}`
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(list.Items[0].Raw), `"extra":1`) {
		t.Fatalf("raw %s", list.Items[0].Raw)
	}
	var ports []ServicePort
	json.Unmarshal([]byte(`[{"port":80,"targetPort":"http"},{"port":81,"targetPort":8081},{"port":82}]`), &ports)
	if !ports[0].TargetPort.IsString || ports[0].TargetPort.Str != "http" || ports[1].TargetPort.Int != 8081 || !ports[2].TargetPort.IsZero() {
		t.Fatalf("ports %+v", ports)
	}
}

func TestInClusterNeedsTheServiceEnvironment(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := InCluster(); err == nil {
		t.Fatal("InCluster without KUBERNETES_SERVICE_HOST succeeded")
	}
}

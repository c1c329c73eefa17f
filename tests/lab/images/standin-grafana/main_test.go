package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigDefaultsAreGrafanas(t *testing.T) {
	cfg, err := loadConfig(nil, envFrom(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := config{addr: ":3000", provisioningDir: "/etc/grafana/provisioning", adminUser: "admin", adminPassword: "admin"}
	if cfg != want {
		t.Errorf("config = %+v, want %+v", cfg, want)
	}
}

func TestConfigFromEnvironmentAndFlag(t *testing.T) {
	env := map[string]string{
		"GF_SERVER_HTTP_PORT": "3300", "GF_PATHS_PROVISIONING": "/p",
		"GF_SECURITY_ADMIN_USER": "boss", "GF_SECURITY_ADMIN_PASSWORD": "pw",
		"GF_USERS_ALLOW_SIGN_UP": "false", "GF_AUTH_ANONYMOUS_ENABLED": "false",
	}
	cfg, err := loadConfig([]string{"--provisioning", "/q"}, envFrom(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := config{addr: ":3300", provisioningDir: "/q", adminUser: "boss", adminPassword: "pw"}
	if cfg != want {
		t.Errorf("config = %+v, want %+v", cfg, want)
	}
}

func TestConfigRefusals(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"anonymous access": {"GF_AUTH_ANONYMOUS_ENABLED": "true"},
		"bad port":         {"GF_SERVER_HTTP_PORT": "http"},
	} {
		if _, err := loadConfig(nil, envFrom(env), &bytes.Buffer{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRunRefusesBrokenProvisioning(t *testing.T) {
	provDir, _ := provisioningFixture(t, "http://prometheus:9090")
	file := writeFile(t, provDir, "datasources/datasources.yaml", "apiVersion: 0\ndatasources: []\n")
	// Should provisioning pass by mistake, serving must fail at once rather than hang the test:
	// the port is taken.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	env := map[string]string{
		"GF_SECURITY_ADMIN_PASSWORD": "never-logged",
		"GF_SERVER_HTTP_ADDR":        "127.0.0.1",
		"GF_SERVER_HTTP_PORT":        strconv.Itoa(taken.Addr().(*net.TCPAddr).Port),
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--provisioning", provDir}, envFrom(env), &stdout, &stderr); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), file) || !strings.Contains(stderr.String(), "apiVersion 0") {
		t.Errorf("stderr = %q", stderr.String())
	}
	if !strings.Contains(stdout.String(), `msg="Starting Grafana"`) || !strings.Contains(stdout.String(), "stand-in") {
		t.Errorf("the start line does not say stand-in: %q", stdout.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), "never-logged") {
		t.Error("the admin password was printed")
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, srv, newLogger(io.Discard)) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve = %v, want nil", err)
		}
	case <-time.After(shutdownTimeout + time.Second):
		t.Fatal("serve did not return")
	}
}

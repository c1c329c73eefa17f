package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunRefusesMissingEnvironment(t *testing.T) {
	for _, name := range requiredEnv {
		t.Setenv(name, "")
	}
	t.Setenv("DATABASE_PASSWORD", "do-not-print-me")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--release", "1"}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "DATABASE_HOST") || strings.Contains(stderr.String(), "DATABASE_PASSWORD") {
		t.Errorf("stderr = %q: want DATABASE_HOST named and the set password not", stderr.String())
	}
	if strings.Contains(stderr.String()+stdout.String(), "do-not-print-me") {
		t.Error("the password's value was printed")
	}
}

func TestServeStopsCleanlyWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := newServer("127.0.0.1:0", http.NotFoundHandler())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, newRequestLog(&bytes.Buffer{}), srv) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(shutdownTimeout + time.Second):
		t.Fatal("serve did not return after cancel")
	}
}

func TestServeFailsOnTakenPort(t *testing.T) {
	first := newServer("127.0.0.1:0", http.NotFoundHandler())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Hold a port, then ask serve for the same one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	second := newServer(ln.Addr().String(), http.NotFoundHandler())
	if err := serve(ctx, newRequestLog(&bytes.Buffer{}), first, second); err == nil {
		t.Fatal("serve accepted a taken port")
	}
}

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

func lookupFrom(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func fullEnv() map[string]string {
	return map[string]string{
		"DATABASE_HOST":     "10.213.7.12",
		"DATABASE_PORT":     "5432",
		"DATABASE_NAME":     "crypto_exchange",
		"DATABASE_USER":     "crypto_app",
		"DATABASE_PASSWORD": "s3cret-pa55",
		"DJANGO_SECRET_KEY": "django-key-value",
	}
}

func TestLoadSettingsComplete(t *testing.T) {
	s, err := loadSettings(lookupFrom(fullEnv()))
	if err != nil {
		t.Fatal(err)
	}
	want := dbSettings{Host: "10.213.7.12", Port: 5432, Name: "crypto_exchange", User: "crypto_app", Password: "s3cret-pa55"}
	if s != want {
		t.Fatalf("settings = %+v, want %+v", s, want)
	}
}

func TestLoadSettingsNamesMissingWithoutValues(t *testing.T) {
	env := fullEnv()
	delete(env, "DATABASE_HOST")
	env["DJANGO_SECRET_KEY"] = "" // set but empty counts as missing
	_, err := loadSettings(lookupFrom(env))
	if err == nil {
		t.Fatal("no error with two variables missing")
	}
	msg := err.Error()
	for _, name := range []string{"DATABASE_HOST", "DJANGO_SECRET_KEY"} {
		if !strings.Contains(msg, name) {
			t.Errorf("message %q does not name %s", msg, name)
		}
	}
	for _, name := range []string{"DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD"} {
		if strings.Contains(msg, name) {
			t.Errorf("message %q names %s, which is set", msg, name)
		}
	}
	for _, value := range env {
		if value != "" && strings.Contains(msg, value) {
			t.Errorf("message %q contains the value %q", msg, value)
		}
	}
}

func TestLoadSettingsBadPortHidesValue(t *testing.T) {
	env := fullEnv()
	env["DATABASE_PORT"] = "54x32"
	_, err := loadSettings(lookupFrom(env))
	if err == nil || !strings.Contains(err.Error(), "DATABASE_PORT") || strings.Contains(err.Error(), "54x32") {
		t.Fatalf("err = %v, want one naming DATABASE_PORT without its value", err)
	}
}

// The DSN must survive values that would break an unquoted key=value string: lib/pq's own
// parser must read back exactly what went in.
func TestDSNRoundTripsAwkwardValues(t *testing.T) {
	s := dbSettings{Host: "db.example", Port: 6543, Name: "my db", User: `o'brien`, Password: `pa ss'\wo=rd sslmode=disable`}
	cfg, err := pq.NewConfig(s.dsn())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != s.Host || cfg.Port != 6543 || cfg.Database != s.Name || cfg.User != s.User || cfg.Password != s.Password {
		t.Fatalf("parsed %q/%d/%q/%q/%q", cfg.Host, cfg.Port, cfg.Database, cfg.User, cfg.Password)
	}
	if cfg.SSLMode != pq.SSLModePrefer {
		t.Errorf("sslmode = %q, want prefer (the password must not override it)", cfg.SSLMode)
	}
	if cfg.ConnectTimeout != 5*time.Second {
		t.Errorf("connect_timeout = %v, want 5 s", cfg.ConnectTimeout)
	}
}

func TestValidateTable(t *testing.T) {
	for _, ok := range []string{"lab_greeting", "_t", "T1"} {
		if err := validateTable(ok); err != nil {
			t.Errorf("validateTable(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1t", "lab greeting", "t;drop table x", `"t"`, "public.t", strings.Repeat("a", 64)} {
		if err := validateTable(bad); err == nil {
			t.Errorf("validateTable(%q) accepted", bad)
		}
	}
}

func TestParseOptions(t *testing.T) {
	if _, err := parseOptions(nil, &strings.Builder{}); err == nil {
		t.Error("no --release accepted")
	}
	o, err := parseOptions([]string{"--release", "2"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o != (options{release: "2", listen: ":8000", metricsListen: ":8001", table: "lab_greeting"}) {
		t.Fatalf("options = %+v", o)
	}
}

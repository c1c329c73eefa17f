package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// productConfig is what the product renders for an https Elasticsearch.
const productConfig = `[SERVICE]
    Flush         5
    Log_Level     info
    Daemon        off
    HTTP_Server   On
    HTTP_Listen   0.0.0.0
    HTTP_Port     2020
    Health_Check  On
    # Chunks wait on the node's disk
    storage.path               /var/lib/fluent-bit/buffer
    storage.sync               normal
    storage.backlog.mem_limit  16M

[INPUT]
    Name              tail
    Tag               kube.*
    Path              /var/log/containers/*.log
    multiline.parser  cri
    DB                /var/lib/fluent-bit/tail.db
    Mem_Buf_Limit     16MB
    Skip_Long_Lines   On
    Refresh_Interval  10
    storage.type      filesystem

[FILTER]
    Name                kubernetes
    Match               kube.*
    Kube_URL            https://kubernetes.default.svc:443
    Kube_CA_File        /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    Kube_Token_File     /var/run/secrets/kubernetes.io/serviceaccount/token
    Kube_Tag_Prefix     kube.var.log.containers.
    Merge_Log           On
    Merge_Log_Key       log_processed
    Keep_Log            Off
    Labels              On
    Annotations         Off
    K8S-Logging.Parser  On
    K8S-Logging.Exclude On

[OUTPUT]
    Name                es
    Match               kube.*
    Host                10.213.7.13
    Port                9200
    HTTP_User           ${ES_USER}
    HTTP_Passwd         ${ES_PASSWORD}
    Index               k8s-containers
    Write_Operation     create
    Suppress_Type_Name  On
    Replace_Dots        On
    Buffer_Size         False
    Trace_Error         On
    Retry_Limit         30
    storage.total_limit_size  2G
    tls                 On
    tls.verify          On
    tls.verify_hostname On
    tls.ca_file         /fluent-bit/etc/elasticsearch-ca/ca.crt
`

func envOf(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

var esEnv = envOf(map[string]string{"ES_USER": "fluent-bit", "ES_PASSWORD": "s3cret-password"})

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fluent-bit.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTheProductConfigIsRead(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, productConfig), esEnv)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.service
	if s.flush != 5*time.Second || s.logLevel != levelInfo || !s.httpServer || s.httpListen != "0.0.0.0" || s.httpPort != 2020 || !s.healthCheck {
		t.Errorf("service %+v", s)
	}
	in := cfg.input
	if in.tag != "kube.*" || in.path != "/var/log/containers/*.log" || !in.criParser || in.db != "/var/lib/fluent-bit/tail.db" ||
		!in.skipLongLines || in.refreshInterval != 10*time.Second {
		t.Errorf("input %+v", in)
	}
	f := cfg.filter
	if f.match != "kube.*" || f.kubeURL != "https://kubernetes.default.svc:443" || f.tagPrefix != "kube.var.log.containers." ||
		!f.mergeLog || f.mergeLogKey != "log_processed" || f.keepLog || !f.labels || f.annotations || !f.exclude {
		t.Errorf("filter %+v", f)
	}
	o := cfg.output
	if o.host != "10.213.7.13" || o.port != 9200 || o.user != "fluent-bit" || o.password != "s3cret-password" || o.index != "k8s-containers" ||
		!o.suppressTypeName || !o.replaceDots || !o.traceError || o.retryLimit != 30 || o.totalLimit != 2<<30 ||
		!o.tls || !o.tlsVerify || !o.tlsVerifyHost || o.caFile != "/fluent-bit/etc/elasticsearch-ca/ca.crt" {
		t.Errorf("output %+v", o)
	}
}

func TestTheHTTPVariantIsRead(t *testing.T) {
	text := productConfig[:strings.Index(productConfig, "    tls ")] + "    tls                 Off\n"
	cfg, err := loadConfig(writeConfig(t, text), esEnv)
	if err != nil || cfg.output.tls {
		t.Fatalf("%v %+v", err, cfg)
	}
}

func TestUnknownThingsAreRefusedWithTheirLine(t *testing.T) {
	cases := map[string]struct{ old, new, want string }{
		"unknown key":     {"    Trace_Error         On\n", "    Trace_Error         On\n    Logstash_Format On\n", ":53: unknown configuration property 'logstash_format' in [OUTPUT es]"},
		"unknown section": {"[FILTER]\n", "[PARSER]\n", ":25: section [PARSER] is not modelled"},
		"unknown plugin":  {"    Name                es\n", "    Name                loki\n", ":41: output plugin 'loki' is not modelled"},
		"other parser":    {"multiline.parser  cri", "multiline.parser  docker", ":18: invalid value \"docker\" for multiline.parser"},
		"directive":       {"[SERVICE]\n", "@INCLUDE other.conf\n[SERVICE]\n", ":1: directive @INCLUDE is not modelled"},
		"daemon":          {"Daemon        off", "Daemon        on", ":4: invalid value \"on\" for daemon"},
	}
	for name, c := range cases {
		text := strings.Replace(productConfig, c.old, c.new, 1)
		_, err := loadConfig(writeConfig(t, text), esEnv)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestAnUnsetVariableIsNamedAndNoValueLeaks(t *testing.T) {
	_, err := loadConfig(writeConfig(t, productConfig), envOf(map[string]string{"ES_USER": "fluent-bit-user"}))
	if err == nil || !strings.Contains(err.Error(), ":46: environment variable 'ES_PASSWORD' is not set") {
		t.Fatalf("%v", err)
	}
	if strings.Contains(err.Error(), "fluent-bit-user") {
		t.Fatalf("the error shows a value: %v", err)
	}
	// A bad value is quoted as written, so a substituted secret does not appear.
	text := strings.Replace(productConfig, "Retry_Limit         30", "Retry_Limit         ${ES_PASSWORD}", 1)
	_, err = loadConfig(writeConfig(t, text), esEnv)
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), `"${ES_PASSWORD}"`) {
		t.Fatalf("%v", err)
	}
}

func TestSizesAndRetryLimits(t *testing.T) {
	for in, want := range map[string]int64{"16M": 16 << 20, "16MB": 16 << 20, "2G": 2 << 30, "512k": 512 << 10, "100": 100} {
		if got, ok := parseSize(in); !ok || got != want {
			t.Errorf("%s: %d", in, got)
		}
	}
	for value, want := range map[string]int{"False": -1, "no_limits": -1, "no_retries": 0, "3": 3} {
		text := strings.Replace(productConfig, "Retry_Limit         30", "Retry_Limit "+value, 1)
		cfg, err := loadConfig(writeConfig(t, text), esEnv)
		if err != nil || cfg.output.retryLimit != want {
			t.Errorf("Retry_Limit %s: %v %d", value, err, cfg.output.retryLimit)
		}
	}
}

func TestArgs(t *testing.T) {
	var out strings.Builder
	if _, done, _ := parseArgs([]string{"--version"}, &out); !done || out.String() != "Fluent Bit v5.1.1 (bootstrap lab stand-in)\n" {
		t.Fatalf("--version: %q", out.String())
	}
	for _, args := range [][]string{{"-c", "/f.conf"}, {"--config=/f.conf"}} {
		if file, _, err := parseArgs(args, &out); err != nil || file != "/f.conf" {
			t.Errorf("%v: %q %v", args, file, err)
		}
	}
	if _, _, err := parseArgs([]string{"-c", "/f.conf", "-i", "cpu"}, &out); err == nil {
		t.Error("an option that is not modelled was accepted")
	}
}

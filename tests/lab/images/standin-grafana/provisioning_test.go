package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProvisioningOfTheProductsFiles(t *testing.T) {
	provDir, _ := provisioningFixture(t, "http://prometheus-service.monitoring.svc:9090")
	p, err := loadProvisioning(provDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Datasources) != 1 || p.Datasources[0].UID != "prometheus" || !p.Datasources[0].IsDefault {
		t.Errorf("datasources = %+v", p.Datasources)
	}
	// The ConfigMap's ..data and timestamped directories are not read a second time.
	if len(p.Dashboards) != 2 || len(p.Folders) != 1 {
		t.Fatalf("dashboards %d, folders %d", len(p.Dashboards), len(p.Folders))
	}
	if p.Dashboards[0].ExternalID != "crypto-exchange-app.json" || p.Dashboards[0].Folder != p.Folders[0] {
		t.Errorf("dashboard = %+v", p.Dashboards[0])
	}
}

func TestMissingProvisioningDirectoriesMeanNothingProvisioned(t *testing.T) {
	p, err := loadProvisioning(t.TempDir())
	if err != nil || len(p.Datasources)+len(p.Dashboards) != 0 {
		t.Fatalf("%+v, %v", p, err)
	}
}

// refusal is a provisioning mistake and the words its error must contain besides the file.
type refusal struct {
	name     string
	file     string // relative to the provisioning directory, or "dash:" + name in the dashboards dir
	content  string
	wantText string
}

func TestProvisioningRefusals(t *testing.T) {
	const ds = "datasources/datasources.yaml"
	const dash = "dashboards/dashboards.yaml"
	cases := []refusal{
		{"yaml that does not parse", ds, "apiVersion: 1\ndatasources: [\n", "not valid YAML"},
		{"apiVersion 2", ds, "apiVersion: 2\ndatasources: []\n", "apiVersion 2"},
		{"no apiVersion", dash, "providers: []\n", "no apiVersion"},
		{"datasource without name", ds, "apiVersion: 1\ndatasources:\n  - type: prometheus\n    url: http://p:9090\n", "no name"},
		{"datasource without type", ds, "apiVersion: 1\ndatasources:\n  - name: P\n    url: http://p:9090\n", "no type"},
		{"unknown type", ds, "apiVersion: 1\ndatasources:\n  - name: Loki\n    type: loki\n    url: http://l:3100\n", `type "loki": this Grafana stand-in models only type prometheus`},
		{"two defaults", ds, "apiVersion: 1\ndatasources:\n  - {name: A, type: prometheus, url: 'http://a:9090', isDefault: true}\n  - {name: B, type: prometheus, url: 'http://b:9090', isDefault: true}\n", "both isDefault"},
		{"bad url", ds, "apiVersion: 1\ndatasources:\n  - {name: A, type: prometheus, url: 'prometheus:9090'}\n", "not an http(s) URL"},
		{"provider path missing", dash, "apiVersion: 1\nproviders:\n  - name: x\n    options:\n      path: /does/not/exist\n", "/does/not/exist"},
		{"dashboard JSON that does not parse", "dash:broken.json", `{"title": "x",`, "not valid dashboard JSON"},
		{"dashboard without title", "dash:untitled.json", `{"uid": "u1", "panels": []}`, "no title"},
		{"duplicate dashboard uid", "dash:copy.json", `{"uid": "crypto-exchange-app", "title": "Copy"}`, `uid "crypto-exchange-app" is already used`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			provDir, dashDir := provisioningFixture(t, "http://prometheus:9090")
			var file string
			if name, ok := strings.CutPrefix(c.file, "dash:"); ok {
				file = writeFile(t, dashDir, name, c.content)
			} else {
				file = writeFile(t, provDir, c.file, c.content)
			}
			_, err := loadProvisioning(provDir)
			if err == nil {
				t.Fatal("loaded without error")
			}
			if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), c.wantText) {
				t.Errorf("error %q: want the file %s and %q", err, file, c.wantText)
			}
		})
	}
}

func TestDefaultsAcrossFilesAreCounted(t *testing.T) {
	provDir, _ := provisioningFixture(t, "http://prometheus:9090")
	second := writeFile(t, provDir, "datasources/more.yml", "apiVersion: 1\ndatasources:\n  - {name: Other, type: prometheus, url: 'http://o:9090', isDefault: true}\n")
	_, err := loadProvisioning(provDir)
	if err == nil || !strings.Contains(err.Error(), second) || !strings.Contains(err.Error(), "isDefault") {
		t.Fatalf("err = %v", err)
	}
}

func TestNonYAMLFilesAreIgnored(t *testing.T) {
	provDir, _ := provisioningFixture(t, "http://prometheus:9090")
	writeFile(t, provDir, "datasources/README.txt", "not yaml: [")
	if err := os.Symlink("nowhere", filepath.Join(provDir, "datasources", "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadProvisioning(provDir); err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"net/http"
	"reflect"
	"testing"
)

func TestSearchListsFolderAndDashboards(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/search", "", true)
	wantStatus(t, resp, body, http.StatusOK)
	hits := decode[[]searchHit](t, body)
	if len(hits) != 3 {
		t.Fatalf("want the folder and 2 dashboards, got %s", body)
	}
	if hits[0].Type != "dash-folder" || hits[0].Title != "Crypto Exchange" {
		t.Errorf("first hit = %+v, want the folder", hits[0])
	}
	app := hits[1]
	want := searchHit{
		ID: app.ID, UID: "crypto-exchange-app", OrgID: 1, Title: "Crypto Exchange: Django app",
		URI: "db/crypto-exchange-django-app", URL: "/d/crypto-exchange-app/crypto-exchange-django-app",
		Type: "dash-db", FolderID: hits[0].ID, FolderUID: hits[0].UID, FolderTitle: "Crypto Exchange",
		FolderURL: "/dashboards/f/" + hits[0].UID + "/crypto-exchange",
	}
	if len(app.Tags) != 1 || app.Tags[0] != "crypto-exchange" {
		t.Errorf("tags = %v", app.Tags)
	}
	app.Tags = nil
	if !reflect.DeepEqual(app, want) {
		t.Errorf("dashboard hit =\n%+v\nwant\n%+v", app, want)
	}
	if hits[2].Title != "No uid here" || !validUID.MatchString(hits[2].UID) || hits[2].UID != stableUID("dashboard:crypto-exchange/no-uid.json") {
		t.Errorf("generated uid hit = %+v", hits[2])
	}
}

func TestSearchFilters(t *testing.T) {
	g := newTestGrafana(t)
	cases := map[string][]string{
		"/api/search?type=dash-db":                      {"Crypto Exchange: Django app", "No uid here"},
		"/api/search?type=dash-folder":                  {"Crypto Exchange"},
		"/api/search?query=django":                      {"Crypto Exchange: Django app"},
		"/api/search?tag=crypto-exchange":               {"Crypto Exchange: Django app"},
		"/api/search?dashboardUIDs=crypto-exchange-app": {"Crypto Exchange: Django app"},
		"/api/search?query=nothing":                     {},
	}
	for path, titles := range cases {
		resp, body := g.call(t, "GET", path, "", true)
		wantStatus(t, resp, body, http.StatusOK)
		hits := decode[[]searchHit](t, body)
		if len(hits) != len(titles) {
			t.Errorf("%s: %s", path, body)
			continue
		}
		for i := range hits {
			if hits[i].Title != titles[i] {
				t.Errorf("%s: hit %d = %q, want %q", path, i, hits[i].Title, titles[i])
			}
		}
	}
}

func TestDashboardByUID(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/dashboards/uid/crypto-exchange-app", "", true)
	wantStatus(t, resp, body, http.StatusOK)
	got := decode[struct {
		Dashboard map[string]any `json:"dashboard"`
		Meta      dashboardMeta  `json:"meta"`
	}](t, body)
	if got.Dashboard["title"] != "Crypto Exchange: Django app" || got.Dashboard["uid"] != "crypto-exchange-app" ||
		got.Dashboard["schemaVersion"] != 39.0 {
		t.Errorf("dashboard = %v", got.Dashboard)
	}
	if panels, _ := got.Dashboard["panels"].([]any); len(panels) != 1 {
		t.Errorf("panels = %v", got.Dashboard["panels"])
	}
	m := got.Meta
	if !m.Provisioned || m.ProvisionedExternalID != "crypto-exchange-app.json" || m.FolderTitle != "Crypto Exchange" ||
		m.CanSave || m.CanDelete || m.URL != "/d/crypto-exchange-app/crypto-exchange-django-app" {
		t.Errorf("meta = %+v", m)
	}

	resp, body = g.call(t, "GET", "/api/dashboards/uid/nope", "", true)
	wantStatus(t, resp, body, http.StatusNotFound)
	if msg := decode[map[string]string](t, body)["message"]; msg != "Dashboard not found" {
		t.Errorf("message %q", msg)
	}
}

func TestFolders(t *testing.T) {
	g := newTestGrafana(t)
	resp, body := g.call(t, "GET", "/api/folders", "", true)
	wantStatus(t, resp, body, http.StatusOK)
	if f := decode[[]map[string]any](t, body); len(f) != 1 || f[0]["title"] != "Crypto Exchange" {
		t.Errorf("folders = %s", body)
	}
}

func TestSlugify(t *testing.T) {
	for in, want := range map[string]string{
		"Crypto Exchange: Django app": "crypto-exchange-django-app",
		"  Nodes / CPU & Memory ":     "nodes-cpu-memory",
	} {
		if got := slugify(in); got != want {
			t.Errorf("slugify(%q) = %q, want %q", in, got, want)
		}
	}
}

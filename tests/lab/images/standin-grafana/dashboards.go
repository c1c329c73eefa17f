package main

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// searchHit is one element of GET /api/search, for a dashboard ("dash-db") or a folder
// ("dash-folder").
type searchHit struct {
	ID          int      `json:"id"`
	UID         string   `json:"uid"`
	OrgID       int      `json:"orgId"`
	Title       string   `json:"title"`
	URI         string   `json:"uri"`
	URL         string   `json:"url"`
	Slug        string   `json:"slug"`
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	IsStarred   bool     `json:"isStarred"`
	FolderID    int      `json:"folderId,omitempty"`
	FolderUID   string   `json:"folderUid,omitempty"`
	FolderTitle string   `json:"folderTitle,omitempty"`
	FolderURL   string   `json:"folderUrl,omitempty"`
	SortMeta    int      `json:"sortMeta"`
	IsDeleted   bool     `json:"isDeleted"`
}

func dashboardURL(d *dashboard) string { return "/d/" + d.UID + "/" + d.Slug }

func folderURL(f *folder) string { return "/dashboards/f/" + f.UID + "/" + slugify(f.Title) }

// searchFilter holds the /api/search parameters this stand-in honours: query (title contains,
// any case), type (dash-db or dash-folder), tag (all given), dashboardUIDs and folderUIDs.
type searchFilter struct {
	query      string
	kind       string
	tags       []string
	uids       []string
	folderUIDs []string
}

func parseSearchFilter(q url.Values) searchFilter {
	return searchFilter{
		query:      strings.ToLower(q.Get("query")),
		kind:       q.Get("type"),
		tags:       q["tag"],
		uids:       splitList(q["dashboardUIDs"]),
		folderUIDs: splitList(q["folderUIDs"]),
	}
}

// splitList accepts both repeated parameters and comma-separated values.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

func (f searchFilter) matchesTitle(title string) bool {
	return f.query == "" || strings.Contains(strings.ToLower(title), f.query)
}

func (f searchFilter) matchesDashboard(d *dashboard) bool {
	if f.kind != "" && f.kind != "dash-db" {
		return false
	}
	if len(f.uids) > 0 && !slices.Contains(f.uids, d.UID) {
		return false
	}
	if len(f.folderUIDs) > 0 {
		uid := "general"
		if d.Folder != nil {
			uid = d.Folder.UID
		}
		if !slices.Contains(f.folderUIDs, uid) {
			return false
		}
	}
	for _, tag := range f.tags {
		if !slices.Contains(d.Tags, tag) {
			return false
		}
	}
	return f.matchesTitle(d.Title)
}

// matchesFolder: a folder has no tags, so a tag or dashboard filter leaves folders out.
func (f searchFilter) matchesFolder(fo *folder) bool {
	if f.kind != "" && f.kind != "dash-folder" {
		return false
	}
	if len(f.tags) > 0 || len(f.uids) > 0 || len(f.folderUIDs) > 0 {
		return false
	}
	return f.matchesTitle(fo.Title)
}

// search answers like Grafana without a type filter: folders first, then dashboards, each in
// title order.
func (s *server) search(w http.ResponseWriter, r *http.Request) {
	filter := parseSearchFilter(r.URL.Query())
	hits := []searchHit{}
	for _, f := range sortedFolders(s.prov.Folders) {
		if filter.matchesFolder(f) {
			hits = append(hits, folderHit(f))
		}
	}
	for _, d := range sortedDashboards(s.prov.Dashboards) {
		if filter.matchesDashboard(d) {
			hits = append(hits, dashboardHit(d))
		}
	}
	writeJSON(w, http.StatusOK, hits)
}

func folderHit(f *folder) searchHit {
	return searchHit{
		ID: f.ID, UID: f.UID, OrgID: 1, Title: f.Title, URI: "db/" + slugify(f.Title),
		URL: folderURL(f), Type: "dash-folder", Tags: []string{},
	}
}

func dashboardHit(d *dashboard) searchHit {
	hit := searchHit{
		ID: d.ID, UID: d.UID, OrgID: 1, Title: d.Title, URI: "db/" + d.Slug,
		URL: dashboardURL(d), Type: "dash-db", Tags: d.Tags,
	}
	if d.Folder != nil {
		hit.FolderID, hit.FolderUID, hit.FolderTitle = d.Folder.ID, d.Folder.UID, d.Folder.Title
		hit.FolderURL = folderURL(d.Folder)
	}
	return hit
}

func sortedFolders(in []*folder) []*folder {
	out := slices.Clone(in)
	sort.SliceStable(out, func(i, j int) bool { return strings.ToLower(out[i].Title) < strings.ToLower(out[j].Title) })
	return out
}

func sortedDashboards(in []*dashboard) []*dashboard {
	out := slices.Clone(in)
	sort.SliceStable(out, func(i, j int) bool { return strings.ToLower(out[i].Title) < strings.ToLower(out[j].Title) })
	return out
}

// listFolders is GET /api/folders.
func (s *server) listFolders(w http.ResponseWriter, _ *http.Request) {
	list := make([]map[string]any, 0, len(s.prov.Folders))
	for _, f := range sortedFolders(s.prov.Folders) {
		list = append(list, map[string]any{"id": f.ID, "uid": f.UID, "title": f.Title})
	}
	writeJSON(w, http.StatusOK, list)
}

// dashboardMeta is the "meta" half of GET /api/dashboards/uid/{uid}.
type dashboardMeta struct {
	Type                   string    `json:"type"`
	CanSave                bool      `json:"canSave"`
	CanEdit                bool      `json:"canEdit"`
	CanAdmin               bool      `json:"canAdmin"`
	CanStar                bool      `json:"canStar"`
	CanDelete              bool      `json:"canDelete"`
	Slug                   string    `json:"slug"`
	URL                    string    `json:"url"`
	Expires                time.Time `json:"expires"`
	Created                time.Time `json:"created"`
	Updated                time.Time `json:"updated"`
	UpdatedBy              string    `json:"updatedBy"`
	CreatedBy              string    `json:"createdBy"`
	Version                int       `json:"version"`
	HasACL                 bool      `json:"hasAcl"`
	IsFolder               bool      `json:"isFolder"`
	FolderID               int       `json:"folderId"`
	FolderUID              string    `json:"folderUid"`
	FolderTitle            string    `json:"folderTitle"`
	FolderURL              string    `json:"folderUrl"`
	Provisioned            bool      `json:"provisioned"`
	ProvisionedExternalID  string    `json:"provisionedExternalId"`
	PublicDashboardEnabled bool      `json:"publicDashboardEnabled"`
}

func (s *server) dashboardByUID(w http.ResponseWriter, r *http.Request) {
	d := s.prov.dashboardByUID(r.PathValue("uid"))
	if d == nil {
		writeMessage(w, http.StatusNotFound, "Dashboard not found")
		return
	}
	meta := dashboardMeta{
		Type: "db",
		// A provisioned dashboard without allowUiUpdates cannot be saved from the UI.
		CanSave: d.AllowUIUpdates, CanEdit: true, CanAdmin: true, CanStar: true,
		CanDelete: !d.DisableDeletion,
		Slug:      d.Slug, URL: dashboardURL(d),
		Created: s.started, Updated: s.started, CreatedBy: "Anonymous", UpdatedBy: "Anonymous",
		Version: 1, Provisioned: true, ProvisionedExternalID: d.ExternalID,
		FolderTitle: "General",
	}
	if d.Folder != nil {
		meta.FolderID, meta.FolderUID, meta.FolderTitle = d.Folder.ID, d.Folder.UID, d.Folder.Title
		meta.FolderURL = folderURL(d.Folder)
	}
	writeJSON(w, http.StatusOK, map[string]any{"dashboard": d.Model, "meta": meta})
}

package main

// Provisioning: the datasources and dashboard providers Grafana reads at start.
//
// Real Grafana logs many provisioning mistakes (an unknown field value, a dashboard that does not
// parse, a missing dashboards path) and starts anyway, leaving the mistake to be found in the UI.
// This stand-in refuses to start instead, naming the file and what is wrong: a lab run then fails
// at `kubectl rollout status` with the reason in `kubectl logs`, rather than passing with an
// empty Grafana.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// datasourceFile is one file of provisioning/datasources. Keys this stand-in does not use
// (deleteDatasources, secureJsonData, ...) are accepted and ignored, as Grafana reads them.
type datasourceFile struct {
	APIVersion  *int               `yaml:"apiVersion"`
	Datasources []datasourceConfig `yaml:"datasources"`
}

type datasourceConfig struct {
	Name      string         `yaml:"name"`
	UID       string         `yaml:"uid"`
	Type      string         `yaml:"type"`
	Access    string         `yaml:"access"`
	URL       string         `yaml:"url"`
	OrgID     int            `yaml:"orgId"`
	IsDefault bool           `yaml:"isDefault"`
	Editable  bool           `yaml:"editable"`
	JSONData  map[string]any `yaml:"jsonData"`
}

// dashboardsFile is one file of provisioning/dashboards.
type dashboardsFile struct {
	APIVersion *int             `yaml:"apiVersion"`
	Providers  []providerConfig `yaml:"providers"`
}

type providerConfig struct {
	Name            string `yaml:"name"`
	OrgID           int    `yaml:"orgId"`
	Folder          string `yaml:"folder"`
	FolderUID       string `yaml:"folderUid"`
	Type            string `yaml:"type"`
	DisableDeletion bool   `yaml:"disableDeletion"`
	AllowUIUpdates  bool   `yaml:"allowUiUpdates"`
	Options         struct {
		Path                      string `yaml:"path"`
		FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
	} `yaml:"options"`
}

// datasource is a provisioned data source as the API shows it.
type datasource struct {
	ID        int
	UID       string
	Name      string
	Type      string
	Access    string
	URL       string
	IsDefault bool
	JSONData  map[string]any
	base      *url.URL // parsed URL, for the proxy and queries
}

type folder struct {
	ID    int
	UID   string
	Title string
}

// dashboard is one provisioned dashboard file.
type dashboard struct {
	ID              int
	UID             string
	Title           string
	Slug            string
	Tags            []string
	Folder          *folder // nil: the General folder
	ExternalID      string  // file path relative to the provider's path, as Grafana reports it
	File            string  // full path, for error messages
	AllowUIUpdates  bool
	DisableDeletion bool
	Model           map[string]any
}

// provisioned is everything loaded at start; it is read-only afterwards.
type provisioned struct {
	Datasources []*datasource
	Folders     []*folder
	Dashboards  []*dashboard
}

// Grafana's rule for uids: at most 40 characters of letters, digits, - and _.
var validUID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)

// loadProvisioning reads dir/datasources and dir/dashboards. A missing subdirectory means no
// files of that kind, as in Grafana.
func loadProvisioning(dir string) (*provisioned, error) {
	p := &provisioned{}
	dsFiles, err := yamlFiles(filepath.Join(dir, "datasources"))
	if err != nil {
		return nil, err
	}
	for _, f := range dsFiles {
		if err := p.addDatasourceFile(f); err != nil {
			return nil, err
		}
	}
	dashFiles, err := yamlFiles(filepath.Join(dir, "dashboards"))
	if err != nil {
		return nil, err
	}
	for _, f := range dashFiles {
		if err := p.addDashboardsFile(f); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// yamlFiles lists *.yaml and *.yml in dir, sorted, skipping the `..data`-style entries of a
// Kubernetes ConfigMap volume.
func yamlFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") {
			continue
		}
		if ext := filepath.Ext(name); ext == ".yaml" || ext == ".yml" {
			files = append(files, filepath.Join(dir, name))
		}
	}
	sort.Strings(files)
	return files, nil
}

// readYAML parses file into out and checks apiVersion, which every provisioning file carries.
func readYAML(file string, out any, apiVersion func() *int) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: not valid YAML: %v", file, err)
	}
	v := apiVersion()
	if v == nil {
		return fmt.Errorf("%s: no apiVersion (want 1)", file)
	}
	if *v != 1 {
		return fmt.Errorf("%s: apiVersion %d is not supported (want 1)", file, *v)
	}
	return nil
}

func (p *provisioned) addDatasourceFile(file string) error {
	var doc datasourceFile
	if err := readYAML(file, &doc, func() *int { return doc.APIVersion }); err != nil {
		return err
	}
	for i, cfg := range doc.Datasources {
		ds, err := p.newDatasource(cfg)
		if err != nil {
			return fmt.Errorf("%s: datasources[%d]: %v", file, i, err)
		}
		p.Datasources = append(p.Datasources, ds)
	}
	return nil
}

// newDatasource checks one entry against the others already loaded and numbers it.
func (p *provisioned) newDatasource(cfg datasourceConfig) (*datasource, error) {
	if cfg.Name == "" {
		return nil, errors.New("no name")
	}
	if cfg.Type == "" {
		return nil, fmt.Errorf("%q has no type", cfg.Name)
	}
	if cfg.Type != "prometheus" {
		return nil, fmt.Errorf("%q has type %q: this Grafana stand-in models only type prometheus", cfg.Name, cfg.Type)
	}
	if cfg.OrgID > 1 {
		return nil, fmt.Errorf("%q is for orgId %d: this Grafana stand-in models only org 1", cfg.Name, cfg.OrgID)
	}
	access := cfg.Access
	if access == "" {
		access = "proxy" // Grafana's default
	}
	if access != "proxy" && access != "direct" {
		return nil, fmt.Errorf("%q has access %q (want proxy or direct)", cfg.Name, cfg.Access)
	}
	base, err := url.Parse(cfg.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("%q has url %q, not an http(s) URL", cfg.Name, cfg.URL)
	}
	uid := cfg.UID
	if uid == "" {
		uid = stableUID("datasource:" + cfg.Name)
	}
	if !validUID.MatchString(uid) {
		return nil, fmt.Errorf("%q has uid %q (at most 40 letters, digits, - or _)", cfg.Name, uid)
	}
	for _, other := range p.Datasources {
		switch {
		case other.Name == cfg.Name:
			return nil, fmt.Errorf("a second datasource named %q", cfg.Name)
		case other.UID == uid:
			return nil, fmt.Errorf("%q has uid %q, already used by %q", cfg.Name, uid, other.Name)
		case other.IsDefault && cfg.IsDefault:
			return nil, fmt.Errorf("%q and %q are both isDefault: only one datasource may be the default", other.Name, cfg.Name)
		}
	}
	jsonData := cfg.JSONData
	if jsonData == nil {
		jsonData = map[string]any{}
	}
	return &datasource{
		ID:        len(p.Datasources) + 1,
		UID:       uid,
		Name:      cfg.Name,
		Type:      cfg.Type,
		Access:    access,
		URL:       cfg.URL,
		IsDefault: cfg.IsDefault,
		JSONData:  jsonData,
		base:      base,
	}, nil
}

func (p *provisioned) addDashboardsFile(file string) error {
	var doc dashboardsFile
	if err := readYAML(file, &doc, func() *int { return doc.APIVersion }); err != nil {
		return err
	}
	for i, cfg := range doc.Providers {
		if err := p.addProvider(cfg); err != nil {
			return fmt.Errorf("%s: providers[%d] (%q): %v", file, i, cfg.Name, err)
		}
	}
	return nil
}

// addProvider loads every dashboard under a file provider's path.
func (p *provisioned) addProvider(cfg providerConfig) error {
	if cfg.Type != "" && cfg.Type != "file" {
		return fmt.Errorf("type %q: Grafana has only file providers", cfg.Type)
	}
	if cfg.OrgID > 1 {
		return fmt.Errorf("orgId %d: this Grafana stand-in models only org 1", cfg.OrgID)
	}
	if cfg.Options.FoldersFromFilesStructure {
		return errors.New("options.foldersFromFilesStructure is not modelled by this Grafana stand-in")
	}
	root := cfg.Options.Path
	if root == "" {
		return errors.New("no options.path")
	}
	info, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("options.path %s: %v", root, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("options.path %s is not a directory", root)
	}
	f, err := p.folderFor(cfg)
	if err != nil {
		return err
	}
	files, err := dashboardFiles(root)
	if err != nil {
		return fmt.Errorf("options.path %s: %v", root, err)
	}
	for _, rel := range files {
		if err := p.addDashboard(cfg, f, root, rel); err != nil {
			return err
		}
	}
	return nil
}

// folderFor finds or makes the provider's folder; an empty folder name is Grafana's General.
func (p *provisioned) folderFor(cfg providerConfig) (*folder, error) {
	if cfg.Folder == "" {
		return nil, nil
	}
	uid := cfg.FolderUID
	if uid == "" {
		uid = stableUID("folder:" + cfg.Folder)
	}
	if !validUID.MatchString(uid) {
		return nil, fmt.Errorf("folderUid %q (at most 40 letters, digits, - or _)", uid)
	}
	for _, f := range p.Folders {
		if f.Title == cfg.Folder {
			return f, nil
		}
	}
	f := &folder{ID: len(p.Folders) + 1, UID: uid, Title: cfg.Folder}
	p.Folders = append(p.Folders, f)
	return f, nil
}

// dashboardFiles lists the *.json files under root (relative paths, sorted). A ConfigMap
// volume holds symlinks (x.json -> ..data/x.json) and `..`-named internals: the internals are
// skipped and the symlinks followed for files.
func dashboardFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			return nil
		}
		if strings.HasPrefix(d.Name(), "..") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || filepath.Ext(d.Name()) != ".json" {
			return nil
		}
		info, err := os.Stat(path) // follows a symlink
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

func (p *provisioned) addDashboard(cfg providerConfig, f *folder, root, rel string) error {
	path := filepath.Join(root, rel)
	model, err := readDashboardJSON(path)
	if err != nil {
		return err
	}
	title, _ := model["title"].(string)
	if strings.TrimSpace(title) == "" {
		return fmt.Errorf("%s: the dashboard has no title", path)
	}
	uid, _ := model["uid"].(string)
	if uid == "" {
		uid = stableUID("dashboard:" + cfg.Name + "/" + filepath.ToSlash(rel))
	}
	if !validUID.MatchString(uid) {
		return fmt.Errorf("%s: uid %q (at most 40 letters, digits, - or _)", path, uid)
	}
	for _, other := range p.Dashboards {
		if other.UID == uid {
			return fmt.Errorf("%s: uid %q is already used by %s (%q)", path, uid, other.File, other.Title)
		}
	}
	d := &dashboard{
		ID:              len(p.Dashboards) + 1,
		UID:             uid,
		Title:           title,
		Slug:            slugify(title),
		Tags:            stringList(model["tags"]),
		Folder:          f,
		ExternalID:      filepath.ToSlash(rel),
		File:            path,
		AllowUIUpdates:  cfg.AllowUIUpdates,
		DisableDeletion: cfg.DisableDeletion,
		Model:           model,
	}
	// Grafana answers with the id and uid it stored, whatever the file said.
	model["id"], model["uid"] = d.ID, d.UID
	p.Dashboards = append(p.Dashboards, d)
	return nil
}

// readDashboardJSON decodes a dashboard keeping numbers as written (json.Number), so the model
// is served back unchanged.
func readDashboardJSON(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var model map[string]any
	if err := dec.Decode(&model); err != nil {
		return nil, fmt.Errorf("%s: not valid dashboard JSON: %v", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: not valid dashboard JSON: data after the object", path)
	}
	if model == nil {
		return nil, fmt.Errorf("%s: not valid dashboard JSON: not an object", path)
	}
	return model, nil
}

// stableUID makes a uid from a seed so that restarts (and replicas) agree, where Grafana would
// store a random one in its database.
func stableUID(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(sum[:])[:14]
}

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

// slugify lower-cases a title and joins its words with '-', as Grafana's URLs show them
// ("Crypto Exchange: Django app" -> "crypto-exchange-django-app").
func slugify(title string) string {
	return strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(title), "-"), "-")
}

func stringList(v any) []string {
	list := []string{}
	items, _ := v.([]any)
	for _, item := range items {
		if s, ok := item.(string); ok {
			list = append(list, s)
		}
	}
	return list
}

func (p *provisioned) datasourceByUID(uid string) *datasource {
	for _, ds := range p.Datasources {
		if ds.UID == uid {
			return ds
		}
	}
	return nil
}

func (p *provisioned) datasourceByName(name string) *datasource {
	for _, ds := range p.Datasources {
		if ds.Name == name {
			return ds
		}
	}
	return nil
}

func (p *provisioned) datasourceByID(id int) *datasource {
	if id < 1 || id > len(p.Datasources) {
		return nil
	}
	return p.Datasources[id-1]
}

func (p *provisioned) dashboardByUID(uid string) *dashboard {
	for _, d := range p.Dashboards {
		if d.UID == uid {
			return d
		}
	}
	return nil
}

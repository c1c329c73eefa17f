package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	grafanaVersion = "13.2.3"
	grafanaCommit  = "bootstrap-lab-stand-in"
)

// server answers the part of Grafana's HTTP API the lab uses, from what was provisioned.
type server struct {
	prov      *provisioned
	adminUser string
	userHash  [32]byte
	passHash  [32]byte
	client    *http.Client // to the data sources (queries and proxy)
	log       *logger
	started   time.Time
}

func newServer(prov *provisioned, adminUser, adminPassword string, log *logger) *server {
	return &server{
		prov:      prov,
		adminUser: adminUser,
		userHash:  sha256.Sum256([]byte(adminUser)),
		passHash:  sha256.Sum256([]byte(adminPassword)),
		// Grafana's default data source timeout.
		client:  &http.Client{Timeout: 30 * time.Second},
		log:     log,
		started: time.Now().UTC(),
	}
}

// handler: every answer says stand-in and is logged; every /api/ path but /api/health needs the
// admin's basic auth; the mux routes the rest.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", s.health)
	mux.HandleFunc("GET /api/user", s.user)
	mux.HandleFunc("GET /api/datasources", s.listDatasources)
	mux.HandleFunc("GET /api/datasources/uid/{uid}", s.datasourceByUID)
	mux.HandleFunc("GET /api/datasources/name/{name}", s.datasourceByName)
	mux.HandleFunc("GET /api/datasources/{id}", s.datasourceByID)
	mux.HandleFunc("/api/datasources/proxy/uid/{uid}", s.proxyByUID)
	mux.HandleFunc("/api/datasources/proxy/uid/{uid}/{rest...}", s.proxyByUID)
	mux.HandleFunc("/api/datasources/proxy/{id}/{rest...}", s.proxyByID)
	mux.HandleFunc("POST /api/ds/query", s.dsQuery)
	mux.HandleFunc("GET /api/search", s.search)
	mux.HandleFunc("GET /api/folders", s.listFolders)
	mux.HandleFunc("GET /api/dashboards/uid/{uid}", s.dashboardByUID)
	// Anything else (other paths, other methods) is Grafana's JSON 404, not the mux's text one.
	mux.HandleFunc("/", notFound)
	return s.withStandinHeaders(s.withRequestLog(s.withAuth(mux)))
}

// withStandinHeaders marks every answer as the stand-in's and adds the headers Grafana sends.
func (s *server) withStandinHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Bootstrap-Lab", "stand-in")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "deny")
		next.ServeHTTP(w, r)
	})
}

// withRequestLog writes one "Request Completed" line per request. Only method, path (without
// the query string) and status are logged: never headers, so never the Authorization header.
func (s *server) withRequestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.log.log("http.server", "info", "Request Completed",
			"method", r.Method, "path", r.URL.Path, "status", rec.status,
			"remote_addr", r.RemoteAddr, "time_ms", time.Since(start).Milliseconds())
	})
}

// withAuth lets /api/health through and asks basic auth of every other /api/ path, before
// routing, so an unknown API path does not tell an anonymous client it is unknown.
func (s *server) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/health" || !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		user, password, ok := r.BasicAuth()
		if !ok {
			writeMessage(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		if !s.isAdmin(user, password) {
			writeMessage(w, http.StatusUnauthorized, "Invalid username or password")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isAdmin compares hashes in constant time, so neither the time taken nor the lengths tell
// how much of a guess was right. Both comparisons always run.
func (s *server) isAdmin(user, password string) bool {
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(password))
	userOK := subtle.ConstantTimeCompare(u[:], s.userHash[:])
	passOK := subtle.ConstantTimeCompare(p[:], s.passHash[:])
	return userOK&passOK == 1
}

// statusRecorder remembers the status code for the log. Unwrap lets the proxy flush streamed
// answers through it (http.ResponseController).
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"message":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeMessage is Grafana's error shape: {"message": "..."}.
func writeMessage(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"message": message})
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	writeMessage(w, http.StatusNotFound, "Not found")
}

type healthBody struct {
	Database string `json:"database"`
	Version  string `json:"version"`
	Commit   string `json:"commit"`
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, healthBody{Database: "ok", Version: grafanaVersion, Commit: grafanaCommit})
}

// user is GET /api/user for the admin, the usual "do these credentials work" question.
func (s *server) user(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"id": 1, "uid": stableUID("user:" + s.adminUser), "login": s.adminUser,
		"email": "admin@localhost", "name": "", "orgId": 1, "theme": "",
		"isGrafanaAdmin": true, "isDisabled": false, "isExternal": false,
		"authLabels": []string{}, "createdAt": s.started, "updatedAt": s.started,
	})
}

// datasourceListItem is one element of GET /api/datasources.
type datasourceListItem struct {
	ID          int            `json:"id"`
	UID         string         `json:"uid"`
	OrgID       int            `json:"orgId"`
	Name        string         `json:"name"`
	Type        string         `json:"type"`
	TypeName    string         `json:"typeName"`
	TypeLogoURL string         `json:"typeLogoUrl"`
	Access      string         `json:"access"`
	URL         string         `json:"url"`
	User        string         `json:"user"`
	Database    string         `json:"database"`
	BasicAuth   bool           `json:"basicAuth"`
	IsDefault   bool           `json:"isDefault"`
	JSONData    map[string]any `json:"jsonData"`
	ReadOnly    bool           `json:"readOnly"`
}

// datasourceDetail is GET /api/datasources/uid/{uid} (and by name, by id).
type datasourceDetail struct {
	ID               int             `json:"id"`
	UID              string          `json:"uid"`
	OrgID            int             `json:"orgId"`
	Name             string          `json:"name"`
	Type             string          `json:"type"`
	TypeLogoURL      string          `json:"typeLogoUrl"`
	Access           string          `json:"access"`
	URL              string          `json:"url"`
	User             string          `json:"user"`
	Database         string          `json:"database"`
	BasicAuth        bool            `json:"basicAuth"`
	BasicAuthUser    string          `json:"basicAuthUser"`
	WithCredentials  bool            `json:"withCredentials"`
	IsDefault        bool            `json:"isDefault"`
	JSONData         map[string]any  `json:"jsonData"`
	SecureJSONFields map[string]bool `json:"secureJsonFields"`
	Version          int             `json:"version"`
	ReadOnly         bool            `json:"readOnly"`
}

const prometheusLogo = "public/plugins/prometheus/img/prometheus_logo.svg"

func (s *server) listDatasources(w http.ResponseWriter, _ *http.Request) {
	list := make([]datasourceListItem, 0, len(s.prov.Datasources))
	for _, ds := range s.prov.Datasources {
		list = append(list, datasourceListItem{
			ID: ds.ID, UID: ds.UID, OrgID: 1, Name: ds.Name, Type: ds.Type, TypeName: "Prometheus",
			TypeLogoURL: prometheusLogo, Access: ds.Access, URL: ds.URL, IsDefault: ds.IsDefault,
			JSONData: ds.JSONData, ReadOnly: true,
		})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *server) datasourceByUID(w http.ResponseWriter, r *http.Request) {
	writeDatasource(w, s.prov.datasourceByUID(r.PathValue("uid")))
}

func (s *server) datasourceByName(w http.ResponseWriter, r *http.Request) {
	writeDatasource(w, s.prov.datasourceByName(r.PathValue("name")))
}

func (s *server) datasourceByID(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		notFound(w, r)
		return
	}
	writeDatasource(w, s.prov.datasourceByID(id))
}

func writeDatasource(w http.ResponseWriter, ds *datasource) {
	if ds == nil {
		writeMessage(w, http.StatusNotFound, "Data source not found")
		return
	}
	writeJSON(w, http.StatusOK, datasourceDetail{
		ID: ds.ID, UID: ds.UID, OrgID: 1, Name: ds.Name, Type: ds.Type, TypeLogoURL: prometheusLogo,
		Access: ds.Access, URL: ds.URL, IsDefault: ds.IsDefault, JSONData: ds.JSONData,
		SecureJSONFields: map[string]bool{}, Version: 1, ReadOnly: true,
	})
}

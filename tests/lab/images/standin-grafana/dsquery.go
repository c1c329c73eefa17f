package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// defaultStep is the query step when the data source's jsonData has no timeInterval.
const defaultStep = 15 * time.Second

// maxPoints is Prometheus's limit of points per series in a range query; a longer range gets a
// coarser step rather than an error.
const maxPoints = 11000

// queryRequest is the body of POST /api/ds/query.
type queryRequest struct {
	Queries []dataQuery `json:"queries"`
	From    timeParam   `json:"from"`
	To      timeParam   `json:"to"`
}

// dataQuery is one Prometheus query as Grafana's panels send it.
type dataQuery struct {
	RefID        string          `json:"refId"`
	Datasource   json.RawMessage `json:"datasource"` // {"uid":..,"type":..} or, before Grafana 8.3, the uid/name as a string
	DatasourceID int             `json:"datasourceId"`
	Expr         string          `json:"expr"`
	Instant      bool            `json:"instant"`
	Range        bool            `json:"range"`
}

// timeParam is "now", "now-5m" or epoch milliseconds, sent as a string or a number.
type timeParam string

func (t *timeParam) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*t = timeParam(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("time must be a string or a number")
	}
	*t = timeParam(n.String())
	return nil
}

// resolve turns a timeParam into a time relative to now; empty means fallback.
func (t timeParam) resolve(now time.Time, fallback string) (time.Time, error) {
	s := strings.TrimSpace(string(t))
	if s == "" {
		s = fallback
	}
	if s == "now" {
		return now, nil
	}
	if rest, ok := strings.CutPrefix(s, "now-"); ok {
		d, err := parseDuration(rest)
		if err != nil {
			return time.Time{}, fmt.Errorf("invalid time %q: %v", s, err)
		}
		return now.Add(-d), nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time %q (want now, now-<duration> or epoch milliseconds)", s)
	}
	return time.UnixMilli(ms), nil
}

// parseDuration reads Prometheus/Grafana durations: Go's units plus d, w and y.
func parseDuration(s string) (time.Duration, error) {
	units := map[byte]time.Duration{'d': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	if s != "" {
		if unit, ok := units[s[len(s)-1]]; ok {
			n, err := strconv.Atoi(s[:len(s)-1])
			if err != nil || n < 0 {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			return time.Duration(n) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d, nil
}

// queryFailure is a refId's result when its query failed.
type queryFailure struct {
	Status      int    `json:"status"`
	Error       string `json:"error"`
	ErrorSource string `json:"errorSource"`
}

// querySuccess is a refId's result with its data frames.
type querySuccess struct {
	Status int     `json:"status"`
	Frames []frame `json:"frames"`
}

// dsQuery is POST /api/ds/query. Each query runs against its Prometheus data source. As in
// Grafana, the answer is 400 as soon as one query failed (the others' frames are still there),
// and a query naming no known data source fails the whole request with a message.
func (s *server) dsQuery(w http.ResponseWriter, r *http.Request) {
	var req queryRequest
	body := http.MaxBytesReader(w, r.Body, 1<<20)
	if err := json.NewDecoder(body).Decode(&req); err != nil {
		writeMessage(w, http.StatusBadRequest, "bad request data: "+err.Error())
		return
	}
	if len(req.Queries) == 0 {
		writeMessage(w, http.StatusBadRequest, "No queries found")
		return
	}
	from, to, err := req.timeRange(time.Now())
	if err != nil {
		writeMessage(w, http.StatusBadRequest, err.Error())
		return
	}
	s.runQueries(r.Context(), w, req.Queries, from, to)
}

// timeRange resolves from and to, defaulting to Grafana's default dashboard range (6 h).
func (req queryRequest) timeRange(now time.Time) (from, to time.Time, err error) {
	if from, err = req.From.resolve(now, "now-6h"); err != nil {
		return
	}
	if to, err = req.To.resolve(now, "now"); err != nil {
		return
	}
	if to.Before(from) {
		err = errors.New("invalid time range: from is after to")
	}
	return
}

func (s *server) runQueries(ctx context.Context, w http.ResponseWriter, queries []dataQuery, from, to time.Time) {
	sources := make([]*datasource, len(queries))
	for i, q := range queries {
		ds, err := s.queryDatasource(q)
		if err != nil {
			writeMessage(w, http.StatusBadRequest, err.Error())
			return
		}
		sources[i] = ds
	}
	results := make(map[string]any, len(queries))
	status := http.StatusOK
	for i, q := range queries {
		refID := q.RefID
		if refID == "" {
			refID = "A"
		}
		frames, failure := s.runQuery(ctx, sources[i], q, refID, from, to)
		if failure != nil {
			status = http.StatusBadRequest
			results[refID] = failure
			continue
		}
		results[refID] = querySuccess{Status: http.StatusOK, Frames: frames}
	}
	writeJSON(w, status, map[string]any{"results": results})
}

// queryDatasource finds a query's data source by uid (object or legacy string form) or id.
func (s *server) queryDatasource(q dataQuery) (*datasource, error) {
	var ref struct {
		UID string `json:"uid"`
	}
	if len(q.Datasource) > 0 && q.Datasource[0] == '"' {
		_ = json.Unmarshal(q.Datasource, &ref.UID)
	} else if len(q.Datasource) > 0 {
		_ = json.Unmarshal(q.Datasource, &ref)
	}
	switch {
	case ref.UID != "":
		if ds := s.prov.datasourceByUID(ref.UID); ds != nil {
			return ds, nil
		}
		if ds := s.prov.datasourceByName(ref.UID); ds != nil {
			return ds, nil
		}
		return nil, fmt.Errorf("Data source not found: uid %q (refId %s)", ref.UID, q.RefID)
	case q.DatasourceID > 0:
		if ds := s.prov.datasourceByID(q.DatasourceID); ds != nil {
			return ds, nil
		}
		return nil, fmt.Errorf("Data source not found: id %d (refId %s)", q.DatasourceID, q.RefID)
	}
	return nil, fmt.Errorf("Query missing data source ID/UID (refId %s)", q.RefID)
}

// runQuery asks Prometheus for an instant and/or a range result (a query with neither flag is
// a range query, as in Grafana) and turns each series into a data frame.
func (s *server) runQuery(ctx context.Context, ds *datasource, q dataQuery, refID string, from, to time.Time) ([]frame, *queryFailure) {
	if strings.TrimSpace(q.Expr) == "" {
		return nil, &queryFailure{Status: http.StatusBadRequest, Error: "query expression is empty", ErrorSource: "plugin"}
	}
	frames := []frame{}
	if q.Instant {
		params := url.Values{"query": {q.Expr}, "time": {promTime(to)}}
		result, failure := s.askPrometheus(ctx, ds, "api/v1/query", params)
		if failure != nil {
			return nil, failure
		}
		frames = append(frames, result.frames(refID, "numeric-multi", "Expr: "+q.Expr)...)
	}
	if q.Range || !q.Instant {
		step := rangeStep(ds, from, to)
		start, end := alignToStep(from, step), alignToStep(to, step)
		params := url.Values{"query": {q.Expr}, "start": {promTime(start)}, "end": {promTime(end)},
			"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
		result, failure := s.askPrometheus(ctx, ds, "api/v1/query_range", params)
		if failure != nil {
			return nil, failure
		}
		frames = append(frames, result.frames(refID, "timeseries-multi", fmt.Sprintf("Expr: %s\nStep: %s", q.Expr, step))...)
	}
	return frames, nil
}

// rangeStep is the data source's timeInterval (its scrape interval), coarsened when the range
// would hold more points than Prometheus answers.
func rangeStep(ds *datasource, from, to time.Time) time.Duration {
	step := defaultStep
	if v, ok := ds.JSONData["timeInterval"].(string); ok {
		if d, err := parseDuration(v); err == nil && d >= time.Millisecond {
			step = d
		}
	}
	if span := to.Sub(from); span/step > maxPoints {
		step = (span/maxPoints + time.Second).Truncate(time.Second)
	}
	return step
}

func alignToStep(t time.Time, step time.Duration) time.Time {
	return time.UnixMilli(t.UnixMilli() - t.UnixMilli()%step.Milliseconds())
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// promResponse is Prometheus's HTTP API envelope.
type promResponse struct {
	Status string `json:"status"`
	Data   struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

// askPrometheus calls one Prometheus API endpoint with GET, or POST when the data source's
// jsonData.httpMethod says so.
func (s *server) askPrometheus(ctx context.Context, ds *datasource, endpoint string, params url.Values) (*promResult, *queryFailure) {
	target, err := joinURL(ds.base, endpoint)
	if err != nil {
		return nil, &queryFailure{Status: http.StatusInternalServerError, Error: err.Error(), ErrorSource: "plugin"}
	}
	var req *http.Request
	if method, _ := ds.JSONData["httpMethod"].(string); strings.EqualFold(method, http.MethodPost) {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(params.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		target.RawQuery = params.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	}
	if err != nil {
		return nil, &queryFailure{Status: http.StatusInternalServerError, Error: err.Error(), ErrorSource: "plugin"}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, &queryFailure{Status: http.StatusInternalServerError, Error: err.Error(), ErrorSource: "downstream"}
	}
	defer resp.Body.Close()
	return decodePromResponse(resp)
}

func decodePromResponse(resp *http.Response) (*promResult, *queryFailure) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, &queryFailure{Status: http.StatusInternalServerError, Error: err.Error(), ErrorSource: "downstream"}
	}
	var pr promResponse
	if err := json.Unmarshal(data, &pr); err != nil || pr.Status == "" {
		return nil, &queryFailure{Status: http.StatusInternalServerError,
			Error: fmt.Sprintf("unexpected answer from Prometheus: HTTP %d", resp.StatusCode), ErrorSource: "downstream"}
	}
	if pr.Status != "success" {
		msg := pr.Error
		if pr.ErrorType != "" {
			msg = pr.ErrorType + ": " + pr.Error
		}
		return nil, &queryFailure{Status: http.StatusBadRequest, Error: msg, ErrorSource: "downstream"}
	}
	result, err := parsePromResult(pr.Data.ResultType, pr.Data.Result)
	if err != nil {
		return nil, &queryFailure{Status: http.StatusInternalServerError, Error: err.Error(), ErrorSource: "plugin"}
	}
	return result, nil
}

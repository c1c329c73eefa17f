package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// entry is one `Key Value` line. raw is the value as written (before ${VAR} substitution): error
// messages quote raw, so a substituted secret never reaches the log.
type entry struct {
	key, value, raw string
	line            int
}

// section is one [SERVICE], [INPUT], [FILTER] or [OUTPUT] block.
type section struct {
	name    string // upper case
	line    int
	entries []entry
}

var envReference = regexp.MustCompile(`\$\{([^}]*)\}`)

// parseClassic reads Fluent Bit's classic configuration format: `[SECTION]` headers, then
// indented `Key Value` lines; `#` starts a comment line. Directives (@INCLUDE, @SET) and sections
// other than the four the product writes are refused: the stand-in does not model them.
func parseClassic(file, text string, lookupEnv func(string) (string, bool)) ([]section, error) {
	var sections []section
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "@"):
			return nil, fmt.Errorf("%s:%d: directive %s is not modelled by the stand-in", file, n, strings.Fields(line)[0])
		case strings.HasPrefix(line, "["):
			s, err := sectionHeader(file, n, line)
			if err != nil {
				return nil, err
			}
			sections = append(sections, s)
			continue
		}
		if len(sections) == 0 {
			return nil, fmt.Errorf("%s:%d: a property outside of any section", file, n)
		}
		e, err := keyValue(file, n, line, lookupEnv)
		if err != nil {
			return nil, err
		}
		cur := &sections[len(sections)-1]
		if slices.ContainsFunc(cur.entries, func(o entry) bool { return o.key == e.key }) {
			return nil, fmt.Errorf("%s:%d: property '%s' is set twice in [%s]", file, n, e.key, cur.name)
		}
		cur.entries = append(cur.entries, e)
	}
	return sections, nil
}

func sectionHeader(file string, n int, line string) (section, error) {
	if !strings.HasSuffix(line, "]") {
		return section{}, fmt.Errorf("%s:%d: invalid section header %q", file, n, line)
	}
	name := strings.ToUpper(strings.TrimSpace(line[1 : len(line)-1]))
	switch name {
	case "SERVICE", "INPUT", "FILTER", "OUTPUT":
		return section{name: name, line: n}, nil
	}
	return section{}, fmt.Errorf("%s:%d: section [%s] is not modelled by the stand-in", file, n, name)
}

func keyValue(file string, n int, line string, lookupEnv func(string) (string, bool)) (entry, error) {
	key, raw := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		key, raw = line[:i], strings.TrimSpace(line[i:])
	}
	if raw == "" {
		return entry{}, fmt.Errorf("%s:%d: property '%s' has no value", file, n, key)
	}
	expanded, err := expandEnv(raw, lookupEnv)
	if err != nil {
		return entry{}, fmt.Errorf("%s:%d: %w", file, n, err)
	}
	return entry{key: strings.ToLower(key), value: strings.TrimSpace(expanded), raw: raw, line: n}, nil
}

// expandEnv replaces ${VAR}. Fluent Bit puts an empty string for an unset variable; the stand-in
// refuses to start instead, naming the variable (never a value), so a missing Secret key shows.
func expandEnv(value string, lookupEnv func(string) (string, bool)) (string, error) {
	var missing string
	out := envReference.ReplaceAllStringFunc(value, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v, ok := lookupEnv(name)
		if !ok && missing == "" {
			missing = name
		}
		return v
	})
	if missing != "" {
		return "", fmt.Errorf("environment variable '%s' is not set", missing)
	}
	return out, nil
}

// Known properties, lower case, per section or plugin: exactly what the product renders. Each
// typed reader below says which it models and which it only accepts.
var knownProperties = map[string][]string{
	"SERVICE": {"flush", "log_level", "daemon", "http_server", "http_listen", "http_port", "health_check",
		"storage.path", "storage.sync", "storage.backlog.mem_limit"},
	"INPUT tail": {"name", "tag", "path", "multiline.parser", "db", "mem_buf_limit", "skip_long_lines",
		"refresh_interval", "storage.type"},
	"FILTER kubernetes": {"name", "match", "kube_url", "kube_ca_file", "kube_token_file", "kube_tag_prefix",
		"merge_log", "merge_log_key", "keep_log", "labels", "annotations", "k8s-logging.parser", "k8s-logging.exclude"},
	"OUTPUT es": {"name", "match", "host", "port", "http_user", "http_passwd", "index", "write_operation",
		"suppress_type_name", "replace_dots", "buffer_size", "trace_error", "retry_limit", "storage.total_limit_size",
		"tls", "tls.verify", "tls.verify_hostname", "tls.ca_file"},
}

var pluginOfKind = map[string]string{"INPUT": "tail", "FILTER": "kubernetes", "OUTPUT": "es"}

// config is the validated, typed configuration.
type config struct {
	service serviceConfig
	input   *tailConfig
	filter  *kubeFilterConfig
	output  *esConfig
}

// loadConfig reads and validates a configuration file.
func loadConfig(path string, lookupEnv func(string) (string, bool)) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the configuration: %w", err)
	}
	sections, err := parseClassic(path, string(data), lookupEnv)
	if err != nil {
		return nil, err
	}
	return buildConfig(path, sections)
}

func buildConfig(file string, sections []section) (*config, error) {
	cfg := &config{service: defaultService()}
	seen := map[string]bool{}
	for _, s := range sections {
		if seen[s.name] {
			return nil, fmt.Errorf("%s:%d: a second [%s] is not modelled by the stand-in", file, s.line, s.name)
		}
		seen[s.name] = true
		if err := checkProperties(file, s); err != nil {
			return nil, err
		}
		p := &props{file: file, s: s}
		switch s.name {
		case "SERVICE":
			cfg.service = readService(p)
		case "INPUT":
			cfg.input = readTail(p)
		case "FILTER":
			cfg.filter = readKubeFilter(p)
		case "OUTPUT":
			cfg.output = readES(p)
		}
		if p.err != nil {
			return nil, p.err
		}
	}
	if cfg.input == nil || cfg.output == nil {
		return nil, fmt.Errorf("%s: the stand-in needs one [INPUT] (tail) and one [OUTPUT] (es)", file)
	}
	return cfg, nil
}

// checkProperties refuses a plugin or a property the stand-in does not know.
func checkProperties(file string, s section) error {
	kind := s.name
	if plugin, ok := pluginOfKind[s.name]; ok {
		name, found := findEntry(s, "name")
		if !found {
			return fmt.Errorf("%s:%d: [%s] without Name", file, s.line, s.name)
		}
		if !strings.EqualFold(name.value, plugin) {
			return fmt.Errorf("%s:%d: %s plugin '%s' is not modelled by the stand-in (only %s)",
				file, name.line, strings.ToLower(s.name), name.raw, plugin)
		}
		kind += " " + plugin
	}
	for _, e := range s.entries {
		if !slices.Contains(knownProperties[kind], e.key) {
			return fmt.Errorf("%s:%d: unknown configuration property '%s' in [%s]: the stand-in knows %s",
				file, e.line, e.key, kind, strings.Join(knownProperties[kind], ", "))
		}
	}
	return nil
}

func findEntry(s section, key string) (entry, bool) {
	for _, e := range s.entries {
		if e.key == key {
			return e, true
		}
	}
	return entry{}, false
}

// props reads typed values out of a section; the first bad value is kept in err.
type props struct {
	file string
	s    section
	err  error
}

func (p *props) fail(e entry, what string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s:%d: invalid value %q for %s: %s", p.file, e.line, e.raw, e.key, what)
	}
}

func (p *props) str(key, def string) string {
	if e, ok := findEntry(p.s, key); ok {
		return e.value
	}
	return def
}

func (p *props) boolean(key string, def bool) bool {
	e, ok := findEntry(p.s, key)
	if !ok {
		return def
	}
	switch strings.ToLower(e.value) {
	case "on", "true", "yes", "1":
		return true
	case "off", "false", "no", "0":
		return false
	}
	p.fail(e, "want On or Off")
	return def
}

func (p *props) integer(key string, def int) int {
	e, ok := findEntry(p.s, key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(e.value)
	if err != nil || n < 0 {
		p.fail(e, "want a number")
		return def
	}
	return n
}

// seconds takes whole or fractional seconds, as Fluent Bit's Flush and Refresh_Interval do.
func (p *props) seconds(key string, def float64) time.Duration {
	v := def
	if e, ok := findEntry(p.s, key); ok {
		f, err := strconv.ParseFloat(e.value, 64)
		if err != nil || f <= 0 {
			p.fail(e, "want seconds")
		} else {
			v = f
		}
	}
	return time.Duration(v * float64(time.Second))
}

// size reads Fluent Bit sizes: a number with an optional K, M or G (B optional), powers of 1024.
func (p *props) size(key string, def int64) int64 {
	e, ok := findEntry(p.s, key)
	if !ok {
		return def
	}
	n, ok := parseSize(e.value)
	if !ok {
		p.fail(e, "want a size such as 16M or 2G")
		return def
	}
	return n
}

func parseSize(s string) (int64, bool) {
	s = strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n * mult, true
}

func (p *props) oneOf(key, def string, allowed ...string) string {
	e, ok := findEntry(p.s, key)
	if !ok {
		return def
	}
	v := strings.ToLower(e.value)
	if !slices.Contains(allowed, v) {
		p.fail(e, "the stand-in models only "+strings.Join(allowed, ", "))
		return def
	}
	return v
}

// serviceConfig: Flush, Log_Level, HTTP_Server/Listen/Port and Health_Check are modelled;
// Daemon must be off (a container's main process); storage.* are accepted only (chunks stay in
// memory, nothing is written under storage.path).
type serviceConfig struct {
	flush       time.Duration
	logLevel    int
	httpServer  bool
	httpListen  string
	httpPort    int
	healthCheck bool
}

func defaultService() serviceConfig {
	return serviceConfig{flush: time.Second, logLevel: levelInfo, httpListen: "0.0.0.0", httpPort: 2020}
}

func readService(p *props) serviceConfig {
	d := defaultService()
	level := p.oneOf("log_level", "info", "off", "error", "warn", "info", "debug", "trace")
	if p.boolean("daemon", false) {
		e, _ := findEntry(p.s, "daemon")
		p.fail(e, "Daemon On is not modelled by the stand-in")
	}
	return serviceConfig{
		flush:       p.seconds("flush", d.flush.Seconds()),
		logLevel:    levelByName[level],
		httpServer:  p.boolean("http_server", false),
		httpListen:  p.str("http_listen", d.httpListen),
		httpPort:    p.integer("http_port", d.httpPort),
		healthCheck: p.boolean("health_check", false),
	}
}

// tailConfig: Tag, Path, multiline.parser (cri only), DB (as a JSON file beside it),
// Skip_Long_Lines and Refresh_Interval are modelled; Mem_Buf_Limit and storage.type are accepted
// only (the buffer is memory bounded by the output's storage.total_limit_size).
type tailConfig struct {
	tag, path, db   string
	criParser       bool
	skipLongLines   bool
	refreshInterval time.Duration
}

func readTail(p *props) *tailConfig {
	c := &tailConfig{
		tag:             p.str("tag", "tail.0"),
		path:            p.str("path", ""),
		db:              p.str("db", ""),
		criParser:       p.oneOf("multiline.parser", "", "cri") == "cri",
		skipLongLines:   p.boolean("skip_long_lines", false),
		refreshInterval: p.seconds("refresh_interval", 60),
	}
	p.size("mem_buf_limit", 0)
	if c.path == "" && p.err == nil {
		p.err = fmt.Errorf("%s:%d: [INPUT] tail needs Path", p.file, p.s.line)
	}
	return c
}

// kubeFilterConfig: every property is modelled except K8S-Logging.Parser, accepted only (no
// pod-suggested parsers).
type kubeFilterConfig struct {
	match, kubeURL, caFile, tokenFile, tagPrefix string
	mergeLog                                     bool
	mergeLogKey                                  string
	keepLog, labels, annotations, exclude        bool
}

func readKubeFilter(p *props) *kubeFilterConfig {
	p.boolean("k8s-logging.parser", false)
	return &kubeFilterConfig{
		match:       p.str("match", ""),
		kubeURL:     p.str("kube_url", "https://kubernetes.default.svc:443"),
		caFile:      p.str("kube_ca_file", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
		tokenFile:   p.str("kube_token_file", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
		tagPrefix:   p.str("kube_tag_prefix", "kube.var.log.containers."),
		mergeLog:    p.boolean("merge_log", false),
		mergeLogKey: p.str("merge_log_key", ""),
		keepLog:     p.boolean("keep_log", true),
		labels:      p.boolean("labels", true),
		annotations: p.boolean("annotations", true),
		exclude:     p.boolean("k8s-logging.exclude", false),
	}
}

// esConfig: all modelled except Buffer_Size, accepted only (the stand-in always reads the whole
// response, which is what the product's Buffer_Size False asks for). Write_Operation: create only.
type esConfig struct {
	match, host      string
	port             int
	user, password   string
	index            string
	suppressTypeName bool
	replaceDots      bool
	traceError       bool
	retryLimit       int // -1: no limit
	totalLimit       int64
	tls              bool
	tlsVerify        bool
	tlsVerifyHost    bool
	caFile           string
}

func readES(p *props) *esConfig {
	p.oneOf("write_operation", "create", "create")
	c := &esConfig{
		match:            p.str("match", ""),
		host:             p.str("host", "127.0.0.1"),
		port:             p.integer("port", 9200),
		user:             p.str("http_user", ""),
		password:         p.str("http_passwd", ""),
		index:            p.str("index", "fluent-bit"),
		suppressTypeName: p.boolean("suppress_type_name", false),
		replaceDots:      p.boolean("replace_dots", false),
		traceError:       p.boolean("trace_error", false),
		retryLimit:       readRetryLimit(p),
		totalLimit:       p.size("storage.total_limit_size", 0),
		tls:              p.boolean("tls", false),
		tlsVerify:        p.boolean("tls.verify", true),
		tlsVerifyHost:    p.boolean("tls.verify_hostname", false),
		caFile:           p.str("tls.ca_file", ""),
	}
	if e, ok := findEntry(p.s, "buffer_size"); ok && !strings.EqualFold(e.value, "false") {
		p.size("buffer_size", 0)
	}
	return c
}

// readRetryLimit: a number of retries; False or no_limits: unlimited; no_retries: 0. Default 1.
func readRetryLimit(p *props) int {
	e, ok := findEntry(p.s, "retry_limit")
	if !ok {
		return 1
	}
	switch strings.ToLower(e.value) {
	case "false", "no_limits":
		return -1
	case "no_retries":
		return 0
	}
	return p.integer("retry_limit", 1)
}

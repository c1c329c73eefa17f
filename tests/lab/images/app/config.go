package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// requiredEnv lists the variables the Deployment's ConfigMap and Secret give the pods, in the
// order they are reported when missing. The real Django app reads the same six.
var requiredEnv = []string{
	"DATABASE_HOST",
	"DATABASE_PORT",
	"DATABASE_NAME",
	"DATABASE_USER",
	"DATABASE_PASSWORD",
	"DJANGO_SECRET_KEY",
}

// dbSettings is what the app needs to reach PostgreSQL. DJANGO_SECRET_KEY is only checked for
// presence: the stand-in has nothing to sign, but a pod without it is misconfigured.
type dbSettings struct {
	Host     string
	Port     int
	Name     string
	User     string
	Password string
}

// loadSettings reads the six variables through lookup (os.LookupEnv in main, a map in tests).
// Error messages name variables only, never values: the password and secret key end up in
// `kubectl logs` otherwise.
func loadSettings(lookup func(string) (string, bool)) (dbSettings, error) {
	values := make(map[string]string, len(requiredEnv))
	var missing []string
	for _, name := range requiredEnv {
		v, ok := lookup(name)
		if !ok || v == "" {
			missing = append(missing, name)
			continue
		}
		values[name] = v
	}
	if len(missing) > 0 {
		return dbSettings{}, fmt.Errorf("missing or empty environment variable(s): %s", strings.Join(missing, ", "))
	}
	port, err := strconv.Atoi(values["DATABASE_PORT"])
	if err != nil || port < 1 || port > 65535 {
		return dbSettings{}, fmt.Errorf("DATABASE_PORT is not a port number (1-65535)")
	}
	return dbSettings{
		Host:     values["DATABASE_HOST"],
		Port:     port,
		Name:     values["DATABASE_NAME"],
		User:     values["DATABASE_USER"],
		Password: values["DATABASE_PASSWORD"],
	}, nil
}

// dsn builds a lib/pq key=value connection string. Every value is quoted so that spaces, quotes
// and backslashes in a generated password cannot split it into extra keys. sslmode "prefer"
// matches what libpq (and so Django's psycopg) does by default: TLS if the server offers it.
func (s dbSettings) dsn() string {
	pairs := []struct{ key, value string }{
		{"host", s.Host},
		{"port", strconv.Itoa(s.Port)},
		{"dbname", s.Name},
		{"user", s.User},
		{"password", s.Password},
		{"sslmode", "prefer"},
		{"connect_timeout", "5"},
		{"application_name", "crypto-exchange-lab"},
	}
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.key + "=" + quoteDSNValue(p.value)
	}
	return strings.Join(parts, " ")
}

// quoteDSNValue wraps a value in single quotes, escaping backslash and quote with a backslash
// as the key=value syntax of libpq (and lib/pq's parser) expects.
func quoteDSNValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// plainIdentifier is an unquoted PostgreSQL identifier (at most 63 bytes). The table name is
// spliced into SQL (identifiers cannot be bind parameters), so nothing else is accepted.
var plainIdentifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func validateTable(name string) error {
	if !plainIdentifier.MatchString(name) {
		return fmt.Errorf("--table %q is not a plain SQL identifier (letters, digits, _; at most 63)", name)
	}
	return nil
}

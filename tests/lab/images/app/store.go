package main

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/lib/pq"
)

// errNoRow says the greeting table answered but is empty.
var errNoRow = errors.New("no row")

// greetingStore is the one question the app asks the database. The handler depends on this
// interface so that its tests run without PostgreSQL.
type greetingStore interface {
	FirstMessage(ctx context.Context) (string, error)
}

// sqlStore asks PostgreSQL through database/sql.
type sqlStore struct {
	db    *sql.DB
	query string
}

// openStore prepares a pool; it does not connect, so the app starts (and its metrics port
// answers the readiness probe) while the database is down, as the Django app would.
func openStore(s dbSettings, table string) (*sqlStore, error) {
	connector, err := pq.NewConnector(s.dsn())
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	// A few replicas share one PostgreSQL on the worker: keep each pod's footprint small.
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	// Recycle connections so a restarted server or a rotated password is picked up.
	db.SetConnMaxLifetime(5 * time.Minute)
	return &sqlStore{
		db:    db,
		query: "SELECT message FROM " + table + " ORDER BY id LIMIT 1",
	}, nil
}

func (s *sqlStore) FirstMessage(ctx context.Context) (string, error) {
	var message string
	err := s.db.QueryRowContext(ctx, s.query).Scan(&message)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errNoRow
	}
	return message, err
}

func (s *sqlStore) Close() error { return s.db.Close() }

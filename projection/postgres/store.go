// Package postgres keeps projections in PostgreSQL: a projection.Store whose
// transactions are pgx transactions, so a projection's handlers write the
// read model with the same transaction that moves its positions.
//
//	pool, err := pgxpool.New(ctx, "postgres://...")
//	store, err := postgres.NewStore(ctx, pool)
//	p, err := projection.New(projection.Config[pgx.Tx]{Name: "order_summaries", Store: store, ...})
//
// Positions live in the table chronicle_projection_positions (created by
// NewStore when missing), one row per projection, topic and partition.
//
// It is a package of its own so that package projection pulls in no database
// driver.
package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronicle-es/chronicle/projection"
)

// Table is the table of positions.
const Table = "chronicle_projection_positions"

const schema = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
	projection  text        NOT NULL,
	topic       text        NOT NULL,
	partition   integer     NOT NULL,
	next_offset bigint      NOT NULL CHECK (next_offset >= 0),
	updated_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (projection, topic, partition)
)`

// Store is a projection.Store in PostgreSQL. It is safe for concurrent use.
// Transactions run at READ COMMITTED (PostgreSQL's default): the conditional
// position update re-reads a row another transaction changed and then
// matches nothing, which is how a second writer is detected.
type Store struct {
	pool *pgxpool.Pool
}

var _ projection.Store[pgx.Tx] = (*Store)(nil)

// NewStore returns a Store on pool and creates the positions table when it
// is missing.
func NewStore(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, errors.New("postgres.NewStore: nil pool: open one with pgxpool.New")
	}
	if err := CreateTables(ctx, pool, schema); err != nil {
		return nil, fmt.Errorf("creating table %s: %w", Table, err)
	}
	return &Store{pool: pool}, nil
}

// CreateTables runs ddl (CREATE TABLE IF NOT EXISTS statements, say) under a
// transaction-scoped advisory lock, so that instances starting at once do
// not race: two concurrent CREATE TABLE IF NOT EXISTS of one table can fail
// in PostgreSQL with a unique violation. A projection's own read-model
// tables can be created with it too.
func CreateTables(ctx context.Context, pool *pgxpool.Pool, ddl string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('`+Table+`'))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ddl)
		return err
	})
}

// Positions returns the positions stored for the projection name.
func (s *Store) Positions(ctx context.Context, name string) ([]projection.Position, error) {
	rows, err := s.pool.Query(ctx, `SELECT topic, partition, next_offset FROM `+Table+` WHERE projection = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("reading positions of projection %q: %w", name, err)
	}
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (projection.Position, error) {
		var p projection.Position
		err := row.Scan(&p.Topic, &p.Partition, &p.Next)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading positions of projection %q: %w", name, err)
	}
	return ps, nil
}

// Commit moves the positions (conditionally, before anything else, so a
// second writer waits on the position rows and then finds them moved), runs
// apply and commits, all in one transaction.
func (s *Store) Commit(ctx context.Context, name string, moves []projection.Move, apply func(ctx context.Context, tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		for _, m := range moves {
			var q string
			args := []any{name, m.Topic, m.Partition, m.To}
			if m.From < 0 {
				q = `INSERT INTO ` + Table + ` (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`
			} else {
				q = `UPDATE ` + Table + ` SET next_offset = $4, updated_at = now() WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset = $5`
				args = append(args, m.From)
			}
			tag, err := tx.Exec(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("moving the position of projection %q on %s/%d: %w", name, m.Topic, m.Partition, err)
			}
			if tag.RowsAffected() != 1 {
				from := "none"
				if m.From >= 0 {
					from = fmt.Sprint(m.From)
				}
				return fmt.Errorf("%w: %s/%d of projection %q is no longer at %s", projection.ErrConflict, m.Topic, m.Partition, name, from)
			}
		}
		return apply(ctx, tx)
	})
}

// Reset locks the positions table against writers (every projection's
// commits wait until Reset ends), runs reset and deletes the positions of
// name, in one transaction.
func (s *Store) Reset(ctx context.Context, name string, reset func(ctx context.Context, tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+Table+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return fmt.Errorf("locking %s: %w", Table, err)
		}
		if err := reset(ctx, tx); err != nil {
			return fmt.Errorf("resetting the read model of projection %q: %w", name, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM `+Table+` WHERE projection = $1`, name); err != nil {
			return fmt.Errorf("deleting the positions of projection %q: %w", name, err)
		}
		return nil
	})
}

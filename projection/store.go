package projection

import (
	"context"
	"errors"
)

// Store keeps a projection's read model and its positions in one database,
// so that both change in one transaction. Package projection/postgres
// implements it for PostgreSQL; Tx is the database's transaction type, which
// the handlers receive.
//
// Its methods may be called concurrently (Run's loop commits while the
// consumer group's callback reads positions for newly assigned partitions).
type Store[Tx any] interface {
	// Positions returns every position recorded for the projection name.
	Positions(ctx context.Context, name string) ([]Position, error)
	// Commit runs one transaction that first moves every position of moves
	// from From to To, conditionally, then calls apply, then commits. When
	// a position is not at From (another instance moved it, or a rebuild
	// deleted it) it changes nothing and returns an error matching
	// ErrConflict. From is -1 for a partition without a position yet. An
	// error from apply rolls everything back and is returned as it is.
	// Moves are sorted by topic and partition, so two writers lock
	// positions in one order.
	Commit(ctx context.Context, name string, moves []Move, apply func(ctx context.Context, tx Tx) error) error
	// Reset runs reset and deletes every position of name in one
	// transaction, excluding concurrent position writers while it runs, so
	// the read model and the positions restart together.
	Reset(ctx context.Context, name string, reset func(ctx context.Context, tx Tx) error) error
}

// Position is where a projection goes on in one partition: the offset of
// the next record to read. Every record before it has been applied.
type Position struct {
	Topic     string
	Partition int32
	Next      int64
}

// Move advances one partition's position in a Commit: From is what the
// projection believes the stored position is (-1: none yet), To the offset
// after the batch's last record.
type Move struct {
	Topic     string
	Partition int32
	From, To  int64
}

// ErrConflict is matched by Store.Commit's error when a position was not
// where the projection believed: another instance (or a zombie, or a rebuild)
// moved it. Run then reloads the positions and goes on from there.
var ErrConflict = errors.New("projection position was moved by another writer")

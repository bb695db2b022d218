package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/projection"
)

// Schema is the read model: one row per order, and the lines it needs to
// count products (adding a product already on the order merges into its
// line). Handlers only ever add to these rows, so an event applied twice
// would show in the totals: exactly once is what keeps them right.
const Schema = `
CREATE TABLE IF NOT EXISTS order_summaries (
	order_id   text        PRIMARY KEY,
	user_id    text        NOT NULL,
	status     text        NOT NULL,
	line_count integer     NOT NULL DEFAULT 0,
	total      bigint      NOT NULL DEFAULT 0,  -- minor units (cents)
	version    bigint      NOT NULL,            -- of the last event applied
	events     bigint      NOT NULL,            -- events applied
	updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS order_summary_lines (
	order_id   text   NOT NULL,
	product_id bigint NOT NULL,
	quantity   bigint NOT NULL,
	unit_price bigint NOT NULL,
	PRIMARY KEY (order_id, product_id)
);`

// reset empties the read model for a rebuild.
func reset(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `TRUNCATE order_summaries, order_summary_lines`)
	return err
}

// handlers apply the order events to the read model.
func handlers() []projection.Handler[pgx.Tx] {
	return []projection.Handler[pgx.Tx]{
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, d order.OrderCreated) error {
			_, err := tx.Exec(ctx, `INSERT INTO order_summaries (order_id, user_id, status, version, events, updated_at)
				VALUES ($1, $2, $3, $4, 1, $5)`, e.Subject, d.UserID, order.StatusNew, e.Version, e.Time)
			return err
		}),
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, d order.LineAdded) error {
			var added bool // a new line, not more of a product already on the order
			err := tx.QueryRow(ctx, `INSERT INTO order_summary_lines (order_id, product_id, quantity, unit_price) VALUES ($1, $2, $3, $4)
				ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = order_summary_lines.quantity + excluded.quantity
				RETURNING xmax = 0`, e.Subject, d.ProductID, d.Quantity, d.UnitPrice).Scan(&added)
			if err != nil {
				return err
			}
			lines := 0
			if added {
				lines = 1
			}
			return touch(ctx, tx, e, `line_count = line_count + $4, total = total + $5`, lines, d.Quantity*d.UnitPrice)
		}),
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, d order.LineRemoved) error {
			var amount int64
			err := tx.QueryRow(ctx, `DELETE FROM order_summary_lines WHERE order_id = $1 AND product_id = $2 RETURNING quantity * unit_price`,
				e.Subject, d.ProductID).Scan(&amount)
			if err != nil {
				return fmt.Errorf("removing line of product %d: %w", d.ProductID, err)
			}
			return touch(ctx, tx, e, `line_count = line_count - 1, total = total - $4`, amount)
		}),
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, d order.StatusChanged) error {
			return touch(ctx, tx, e, `status = $4`, string(d.To))
		}),
	}
}

// touch updates an order's summary with set (whose parameters start at $4)
// and records e as applied.
func touch(ctx context.Context, tx pgx.Tx, e aggregates.Event, set string, args ...any) error {
	tag, err := tx.Exec(ctx, `UPDATE order_summaries SET `+set+`, version = $2, events = events + 1, updated_at = $3 WHERE order_id = $1`,
		append([]any{e.Subject, e.Version, e.Time}, args...)...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("order %q has no summary: its OrderCreated was never applied", e.Subject)
	}
	return nil
}

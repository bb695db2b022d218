// Package projection turns events topics into a read model in a database,
// applying each event's effect exactly once.
//
// # Shape
//
// A Projection reads the "<prefix>.events" topics of some aggregate types,
// decodes each record with the aggregate's definition (upcasting old schema
// versions), and calls the Handler registered for the event's payload type
// with the database transaction of the batch:
//
//	p, err := projection.New(projection.Config[pgx.Tx]{
//		Name:     "order_summaries",
//		Kafka:    client.Kafka{Brokers: brokers},
//		Prefixes: []string{"orders"},
//		Decoder:  order.Definition(),
//		Store:    store, // postgres.NewStore(ctx, pool)
//		Handlers: []projection.Handler[pgx.Tx]{
//			projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, d order.OrderCreated) error {
//				_, err := tx.Exec(ctx, `INSERT INTO order_summaries (order_id, user_id) VALUES ($1, $2)`, e.Subject, d.UserID)
//				return err
//			}),
//		},
//		Reset: func(ctx context.Context, tx pgx.Tx) error {
//			_, err := tx.Exec(ctx, `TRUNCATE order_summaries`)
//			return err
//		},
//	})
//	err = p.Run(ctx)
//
// The database comes in through a Store, whose transaction type Tx the
// handlers receive; projection/postgres is the PostgreSQL store (pgx), kept
// in a package of its own so that this one depends on no driver.
//
// # Exactly once
//
// A Store keeps, next to the read model, each partition's position: the
// offset of the next record to apply. One transaction per batch moves the
// positions and applies the batch, so both commit or neither does; a restart
// seeks to the stored positions (Kafka's committed offsets are not used).
// Position moves are conditional on the old value, so two instances that
// both believe they own a partition (a zombie after a rebalance, a twin in
// another consumer group) never both apply a batch: the loser rolls back,
// reloads and goes on from what the database says. Projection's doc comment
// lists each crash point.
//
// # Scaling out
//
// Instances of one projection (same Name) join one consumer group (Group,
// default "projection."+Name), which spreads the partitions; on assignment an
// instance reads its partitions' positions from the Store.
//
// # Rebuilding
//
// Rebuild runs Config.Reset and deletes the positions in one transaction; the
// next Run replays every event. Use it after changing what the handlers
// write.
//
// # Events that cannot be decoded
//
// By default, an event record the Decoder cannot read (a schema version newer
// than the code, an unknown type) stops Run with an error that unwraps to a
// *client.RecordError naming its topic, partition, offset, type and schema
// version; the events before it are applied and the position stays at it, so
// deploying code that reads it and restarting goes on from there.
// SkipUndecodable passes over such records instead: the position moves past
// each, and a warning names it.
package projection

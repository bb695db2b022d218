package snapshots_test

import (
	"context"
	"fmt"

	"github.com/chronicle-es/chronicle/snapshots"
)

// A processor saves snapshots together with the checkpoint they complete,
// and restores a partition from them.
func ExampleMemory() {
	ctx := context.Background()
	store := snapshots.NewMemory()
	defer store.Close()

	err := store.Save(ctx, "order", 3, &snapshots.Checkpoint{Offset: 120, Stamp: "order/v1"}, []snapshots.Snapshot{
		{AggregateID: "o-1", Version: 7, Offset: 118, Stamp: "order/v1", Data: []byte(`{"status":"paid"}`)},
		{AggregateID: "o-2", Version: 2, Offset: 119, Stamp: "order/v1", Data: []byte(`{"status":"new"}`)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// An older snapshot never replaces a newer one.
	_ = store.Save(ctx, "order", 3, nil, []snapshots.Snapshot{{AggregateID: "o-1", Version: 5}})

	cp, _, _ := store.Checkpoint(ctx, "order", 3)
	fmt.Println("replay from offset", cp.Offset)
	found, _ := store.LoadMany(ctx, "order", 3, []string{"o-1", "o-2", "o-3"})
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		if s, ok := found[id]; ok {
			fmt.Printf("%s at version %d: %s\n", id, s.Version, s.Data)
		} else {
			fmt.Printf("%s: no snapshot, replay it\n", id)
		}
	}
	// Output:
	// replay from offset 120
	// o-1 at version 7: {"status":"paid"}
	// o-2 at version 2: {"status":"new"}
	// o-3: no snapshot, replay it
}

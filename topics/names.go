// Package topics names, creates and validates the Kafka topics of one
// aggregate type: commands (input), events (the compacted event store), state
// (compacted latest state), results (one per command), dlq (undecodable
// commands) and meta (which consumer group serves them, see ClaimGroup).
package topics

// Names are the topics of one aggregate type: the five data topics (All)
// and the meta topic.
type Names struct {
	// Prefix is the shared prefix, e.g. "orders".
	Prefix string
	// Commands is the input topic, keyed by aggregate id.
	Commands string
	// Events is the event store: compacted, one key per event
	// (EventKey), an aggregate's events in one partition in version order.
	Events string
	// State is compacted, keyed by aggregate id: each aggregate's latest state.
	State string
	// Results holds one result per command, keyed by command id.
	Results string
	// DLQ holds commands that could not be decoded, bytes untouched, with
	// the error in headers.
	DLQ string
	// Meta holds the claims of consumer groups on these topics (one
	// partition, kept forever): which group serves them and since when.
	// See ClaimGroup.
	Meta string
}

// For returns the topic names for prefix: "<prefix>.commands",
// "<prefix>.events", "<prefix>.state", "<prefix>.results", "<prefix>.dlq"
// and "<prefix>.meta".
func For(prefix string) Names {
	return Names{
		Prefix:   prefix,
		Commands: prefix + ".commands",
		Events:   prefix + ".events",
		State:    prefix + ".state",
		Results:  prefix + ".results",
		DLQ:      prefix + ".dlq",
		Meta:     prefix + ".meta",
	}
}

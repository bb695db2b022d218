package main

import (
	"fmt"
	"strings"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/ballot"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/processor"
)

// defaultAggregates maps topic prefixes to built-in aggregate types.
const defaultAggregates = "orders=order,ballots=ballot"

// builtinKinds are the aggregate types compiled into this binary, by name.
func builtinKinds() map[string]aggregates.Kind {
	return map[string]aggregates.Kind{
		"order":  order.Definition(),
		"ballot": ballot.Definition(),
	}
}

// parseBindings reads "prefix=type,prefix=type" (a bare "orders" means the
// type whose name is the prefix without a trailing "s").
func parseBindings(spec string) ([]processor.Binding, error) {
	kinds := builtinKinds()
	var out []processor.Binding
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		prefix, typ, ok := strings.Cut(part, "=")
		if !ok {
			typ = strings.TrimSuffix(prefix, "s")
		}
		k, found := kinds[typ]
		if !found {
			return nil, fmt.Errorf("aggregate type %q (for topic prefix %q) is not built in; known types: order, ballot", typ, prefix)
		}
		out = append(out, processor.Binding{Kind: k, Prefix: prefix})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no aggregate types given: use e.g. --aggregates %s", defaultAggregates)
	}
	return out, nil
}

// kindForPrefix resolves a topic prefix (or type name) given on the command
// line to its aggregate type.
func kindForPrefix(spec, prefix string) (aggregates.Kind, error) {
	bs, err := parseBindings(spec)
	if err != nil {
		return nil, err
	}
	for _, b := range bs {
		if b.Prefix == prefix || b.Kind.Name() == prefix {
			return b.Kind, nil
		}
	}
	return nil, fmt.Errorf("%q is not a known topic prefix (known: %s); pass --aggregates prefix=type to add one", prefix, spec)
}

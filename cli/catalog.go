package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/processor"
)

// catalog is the aggregate types a program serves, in the order given.
type catalog struct {
	kinds []aggregates.Kind
}

// newCatalog checks kinds: none nil, no name twice.
func newCatalog(kinds []aggregates.Kind) (catalog, error) {
	seen := map[string]bool{}
	for i, k := range kinds {
		if k == nil || reflect.ValueOf(k).IsNil() {
			return catalog{}, fmt.Errorf("aggregate type %d of %d is nil: pass Definition values, e.g. cli.Main(order.Definition())", i+1, len(kinds))
		}
		if seen[k.Name()] {
			return catalog{}, fmt.Errorf("aggregate type %q is passed twice: pass each once", k.Name())
		}
		seen[k.Name()] = true
	}
	return catalog{kinds: kinds}, nil
}

// names returns the aggregate type names.
func (c catalog) names() []string {
	out := make([]string, len(c.kinds))
	for i, k := range c.kinds {
		out[i] = k.Name()
	}
	return out
}

func (c catalog) byName(name string) (aggregates.Kind, bool) {
	for _, k := range c.kinds {
		if k.Name() == name {
			return k, true
		}
	}
	return nil, false
}

// defaultPrefix is the topic prefix of an aggregate type unless
// --aggregates says otherwise: its name and an "s".
func defaultPrefix(k aggregates.Kind) string { return k.Name() + "s" }

// defaultSpec is the --aggregates value serving every type on its default
// prefix, e.g. "orders=order,ballots=ballot".
func (c catalog) defaultSpec() string {
	parts := make([]string, len(c.kinds))
	for i, k := range c.kinds {
		parts[i] = defaultPrefix(k) + "=" + k.Name()
	}
	return strings.Join(parts, ",")
}

// errNoKinds is returned when a program passes no aggregate types to Main.
var errNoKinds = errors.New("this program serves no aggregate types: its main must pass them, e.g. cli.Main(order.Definition()); " +
	"see \"Running your own aggregates\" in Chronicle's README")

// parseBindings reads "prefix=type,prefix=type". A bare "orders" is a
// prefix whose type is its name without a trailing "s" (or the name
// itself when that is a type).
func (c catalog) parseBindings(spec string) ([]processor.Binding, error) {
	if len(c.kinds) == 0 {
		return nil, errNoKinds
	}
	var out []processor.Binding
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		prefix, typ, explicit := strings.Cut(part, "=")
		prefix, typ = strings.TrimSpace(prefix), strings.TrimSpace(typ)
		if !explicit {
			typ = strings.TrimSuffix(prefix, "s")
			if _, ok := c.byName(typ); !ok {
				typ = prefix
			}
		}
		if prefix == "" {
			return nil, fmt.Errorf("--aggregates %q: %q has no topic prefix: write prefix=type, e.g. %s", spec, part, c.defaultSpec())
		}
		k, found := c.byName(typ)
		if !found {
			what := fmt.Sprintf("aggregate type %q (for topic prefix %q)", typ, prefix)
			if !explicit {
				what = fmt.Sprintf("topic prefix %q names no aggregate type", prefix)
			}
			return nil, fmt.Errorf("--aggregates %q: %s; this program's types are %s: write prefix=type with one of them, e.g. --aggregates %s "+
				"(a type of your own needs a program built with cli.Main)", spec, what, joinNames(c.names()), c.defaultSpec())
		}
		out = append(out, processor.Binding{Kind: k, Prefix: prefix})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no aggregate types given: use e.g. --aggregates %s", c.defaultSpec())
	}
	return out, nil
}

// resolve resolves a PREFIX argument, a topic prefix ("orders") or an
// aggregate type name ("order"), to the topic prefix and the aggregate type
// served there according to the --aggregates spec.
func (c catalog) resolve(spec, arg string) (string, aggregates.Kind, error) {
	bindings, err := c.parseBindings(spec)
	if err != nil {
		return "", nil, err
	}
	for _, b := range bindings {
		if b.Prefix == arg {
			return b.Prefix, b.Kind, nil
		}
	}
	for _, b := range bindings {
		if b.Kind.Name() == arg {
			return b.Prefix, b.Kind, nil
		}
	}
	known := make([]string, len(bindings))
	for i, b := range bindings {
		known[i] = fmt.Sprintf("%s (%s)", b.Prefix, b.Kind.Name())
	}
	return "", nil, fmt.Errorf("%q is not a known topic prefix (known: %s); if %s.commands is served by one of this program's types (%s), pass --aggregates %s=TYPE",
		arg, strings.Join(known, ", "), arg, joinNames(c.names()), arg)
}

// joinNames lists names as "a, b and c".
func joinNames(names []string) string {
	switch len(names) {
	case 0:
		return "(none)"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// example returns, for the help texts and dev's hints, a prefix, an
// aggregate id, a command type and its data for the first aggregate type:
// the first command type (by name) that a new aggregate accepts with one of
// the sample payloads of samplePayloads, or else the first command type with
// the first sample. The hint a user copies from dev's banner must work.
func (c catalog) example() (prefix, id, typ, data string) {
	if len(c.kinds) == 0 {
		return "PREFIX", "ID", "TYPE", "{}"
	}
	k := c.kinds[0]
	prefix, id, typ, data = defaultPrefix(k), k.Name()[:1]+"-1", "TYPE", "{}"
	for i, t := range k.CommandTypes() {
		short := strings.TrimPrefix(t, k.Name()+".")
		for j, payload := range samplePayloads(k, t) {
			b, err := json.Marshal(payload)
			if err != nil {
				continue
			}
			if i == 0 && j == 0 {
				typ, data = short, string(b)
			}
			cmd, err := k.NewCommand(id, payload, aggregates.Metadata{})
			if err != nil {
				continue
			}
			if _, err := k.NewAggregate(id).Execute(&cmd, time.Now()); err == nil {
				return prefix, id, short, string(b)
			}
		}
	}
	return prefix, id, typ, data
}

// sampleCode is the second sample of a string field: an upper-case
// three-letter code, the shape of the ISO codes (currencies, countries)
// that commands check most often.
const sampleCode = "EUR"

// samplePayloads returns values of the Go type of command type t to try, in
// order: first with its exported top-level fields set to sample values
// ("x", 1, true), then once for each string field with that field set to
// sampleCode instead.
func samplePayloads(k aggregates.Kind, t string) []any {
	zero, err := k.DecodeCommandData(&aggregates.Command{Type: t})
	if err != nil || zero == nil {
		return nil
	}
	base := reflect.New(reflect.TypeOf(zero)).Elem()
	if base.Kind() != reflect.Struct {
		return []any{base.Interface()}
	}
	var strs []int
	for i := range base.NumField() {
		if !base.Type().Field(i).IsExported() {
			continue
		}
		switch f := base.Field(i); f.Kind() {
		case reflect.String:
			f.SetString("x")
			strs = append(strs, i)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(1)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(1)
		case reflect.Float32, reflect.Float64:
			f.SetFloat(1)
		case reflect.Bool:
			f.SetBool(true)
		}
	}
	out := []any{base.Interface()}
	for _, i := range strs {
		v := reflect.New(base.Type()).Elem()
		v.Set(base)
		v.Field(i).SetString(sampleCode)
		out = append(out, v.Interface())
	}
	return out
}

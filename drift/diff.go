package drift

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
)

// maxDiff bounds the lines of one Finding.Diff.
const maxDiff = 20

// jsonDiff lists the leaves in which two JSON documents differ, as
// "path: snapshot X, replay Y", at most maxDiff of them. Documents that
// are not JSON are shown whole.
func jsonDiff(snapshot, replay []byte) []string {
	a, errA := decodeJSON(snapshot)
	b, errB := decodeJSON(replay)
	if errA != nil || errB != nil {
		return []string{fmt.Sprintf("snapshot %s", snapshot), fmt.Sprintf("replay   %s", replay)}
	}
	var out []string
	diffValues("", a, b, &out)
	if len(out) > maxDiff {
		out = append(out[:maxDiff], fmt.Sprintf("… and %d more", len(out)-maxDiff))
	}
	return out
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// absent stands for a member or element one side does not have.
type absent struct{}

func diffValues(path string, a, b any, out *[]string) {
	if am, ok := a.(map[string]any); ok {
		if bm, ok := b.(map[string]any); ok {
			keys := slices.Sorted(maps.Keys(am))
			for k := range bm {
				if _, both := am[k]; !both {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			for _, k := range keys {
				av, aok := am[k]
				bv, bok := bm[k]
				diffValues(join(path, k), orAbsent(av, aok), orAbsent(bv, bok), out)
			}
			return
		}
	}
	if as, ok := a.([]any); ok {
		if bs, ok := b.([]any); ok {
			for i := range max(len(as), len(bs)) {
				var av, bv any = absent{}, absent{}
				if i < len(as) {
					av = as[i]
				}
				if i < len(bs) {
					bv = bs[i]
				}
				diffValues(path+"["+strconv.Itoa(i)+"]", av, bv, out)
			}
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, fmt.Sprintf("%s: snapshot %s, replay %s", orRoot(path), show(a), show(b)))
	}
}

func orAbsent(v any, ok bool) any {
	if !ok {
		return absent{}
	}
	return v
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(document)"
	}
	return path
}

func show(v any) string {
	if _, ok := v.(absent); ok {
		return "(absent)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

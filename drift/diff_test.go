package drift

import (
	"slices"
	"testing"
)

func TestJSONDiffNamesEveryDifferingLeaf(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b string
		want []string
	}{
		{"equal documents", `{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, nil},
		{"a changed number", `{"state":{"balance":77}}`, `{"state":{"balance":79}}`, []string{"state.balance: snapshot 77, replay 79"}},
		{"a member only one side has", `{"a":1}`, `{"a":1,"b":"x"}`, []string{`b: snapshot (absent), replay "x"`}},
		{"a longer array", `{"l":[1]}`, `{"l":[1,{"q":2}]}`, []string{`l[1]: snapshot (absent), replay {"q":2}`}},
		{"a changed type", `{"a":{"x":1}}`, `{"a":[1]}`, []string{`a: snapshot {"x":1}, replay [1]`}},
		{"not JSON", `{`, `{}`, []string{"snapshot {", "replay   {}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := jsonDiff([]byte(tc.a), []byte(tc.b)); !slices.Equal(got, tc.want) {
				t.Errorf("jsonDiff = %q, want %q", got, tc.want)
			}
		})
	}
	var a, b []byte = []byte(`[`), []byte(`[`)
	for i := range 30 {
		if i > 0 {
			a, b = append(a, ','), append(b, ',')
		}
		a, b = append(a, '1'), append(b, '2')
	}
	a, b = append(a, ']'), append(b, ']')
	if got := jsonDiff(a, b); len(got) != maxDiff+1 || got[maxDiff] != "… and 10 more" {
		t.Errorf("30 differences: %q, want %d lines and a count of the rest", got, maxDiff+1)
	}
}

package audit

import (
	"encoding/json"
	"testing"
)

func TestAppendJSONStringASCII(t *testing.T) {
	for c := 0; c < 0x80; c++ {
		s := "a" + string(rune(c)) + "b<&>\"\\"
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%#x: %s want %s", c, got, want)
		}
	}
}

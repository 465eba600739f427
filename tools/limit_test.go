package tools

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestLimitedBody: an answer of exactly the limit reads whole; one byte
// more fails with ErrAnswerTooLarge, whatever the read sizes.
func TestLimitedBody(t *testing.T) {
	for _, size := range []int{0, 1, 1023, 1024} {
		b := &limitedBody{ReadCloser: io.NopCloser(strings.NewReader(strings.Repeat("x", size))), left: 1024, max: 1024}
		got, err := io.ReadAll(b)
		if err != nil || len(got) != size {
			t.Errorf("%d bytes: read %d, %v", size, len(got), err)
		}
	}
	for _, size := range []int{1025, 5000} {
		b := &limitedBody{ReadCloser: io.NopCloser(strings.NewReader(strings.Repeat("x", size))), left: 1024, max: 1024}
		got, err := io.ReadAll(b)
		if !errors.Is(err, ErrAnswerTooLarge) || len(got) != 1024 {
			t.Errorf("%d bytes: read %d, %v", size, len(got), err)
		}
	}
}

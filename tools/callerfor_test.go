package tools

import (
	"context"
	"errors"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

type nopCaller struct{}

func (nopCaller) Elicit(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return nil, nil
}
func (nopCaller) CreateMessage(context.Context, mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	return nil, nil
}
func (nopCaller) ListRoots(context.Context, mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	return nil, nil
}
func (nopCaller) Notify(string, map[string]any) {}

// TestCallerForNeverGuesses: a server-initiated request without a call
// context goes to the only call in flight, and to no one when another call
// (even one without a Caller, such as a completion) is in flight too.
func TestCallerForNeverGuesses(t *testing.T) {
	p, err := NewPool(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := newDownstream(Spec{Name: "s"}, p)
	_, endA := d.begin(WithCaller(context.Background(), nopCaller{}), nil)
	if c, err := d.callerFor(context.Background()); err != nil || c == nil {
		t.Fatalf("one call in flight: %v, %v", c, err)
	}
	_, endB := d.begin(context.Background(), nil) // no Caller
	if _, err := d.callerFor(context.Background()); !errors.Is(err, ErrNoCaller) {
		t.Fatalf("two calls in flight, one without a caller: err %v, want ErrNoCaller", err)
	}
	endA()
	if _, err := d.callerFor(context.Background()); !errors.Is(err, ErrNoCaller) {
		t.Fatalf("only a caller-less call in flight: err %v, want ErrNoCaller", err)
	}
	endB()
}

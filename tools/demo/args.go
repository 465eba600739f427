package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/mark3labs/mcp-go/mcp"
)

// decodeArgs strictly decodes the tool call's arguments into dst: unknown
// fields and type mismatches are errors. It prefers the raw wire bytes so
// that numbers keep their exact textual form.
func decodeArgs(req mcp.CallToolRequest, dst any) error {
	raw := []byte(req.Params.RawArguments)
	if len(raw) == 0 {
		if req.Params.Arguments == nil {
			raw = []byte("{}")
		} else {
			b, err := json.Marshal(req.Params.Arguments)
			if err != nil {
				return fmt.Errorf("invalid arguments: %w", err)
			}
			raw = b
		}
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("invalid arguments: %s must be of type %s", typeErr.Field, jsonTypeName(typeErr.Type.Kind().String()))
		}
		return fmt.Errorf("invalid arguments: %w", err)
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "int", "int64", "float64":
		return "number"
	case "bool":
		return "boolean"
	default:
		return kind
	}
}

// errNotInteger is the message for an amount that is not a JSON integer
// literal.
var errNotInteger = errors.New("amount must be an integer number of cents, e.g. 1250 for 12.50")

// parseMinorUnits reads a JSON value as a strictly positive integer amount of
// minor units. Only a bare JSON integer literal is accepted: strings, floats
// (including 100.0), exponents and values beyond maxAmount are rejected, so
// money never goes through a float.
func parseMinorUnits(raw json.RawMessage) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, errors.New("amount is required")
	}
	for i, c := range raw {
		if (c < '0' || c > '9') && !(i == 0 && c == '-') {
			return 0, errNotInteger
		}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("amount must be at most %d", maxAmount)
		}
		return 0, errNotInteger
	}
	if n < 1 {
		return 0, errors.New("amount must be at least 1 cent")
	}
	if n > maxAmount {
		return 0, fmt.Errorf("amount must be at most %d", maxAmount)
	}
	return n, nil
}

// toolError is the isError result every handler returns for a failure the
// caller can fix.
func toolError(format string, a ...any) *mcp.CallToolResult {
	return mcp.NewToolResultErrorf(format, a...)
}

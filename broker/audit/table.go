package audit

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
)

// WriteTable writes entries as an aligned table, one line per entry: seq,
// time, type, call id, agent, initiator, target, decision (or outcome
// status), reason, policy ids, latency. Empty cells print "-". Values that
// agents or tools control are escaped when they hold non-printable runes,
// so a tool name cannot inject terminal control sequences or break columns.
func WriteTable(w io.Writer, entries []Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tCALL ID\tAGENT\tINITIATOR\tTARGET\tRESULT\tREASON\tPOLICIES\tLATENCY")
	for _, e := range entries {
		ev := e.Event
		result := ev.Decision
		if result == "" {
			result = ev.Status
		}
		latency := ""
		if ev.LatencyMS != 0 {
			latency = strconv.FormatFloat(ev.LatencyMS, 'f', 1, 64) + "ms"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			e.Seq,
			ev.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
			cell(string(ev.Type)),
			cell(ev.CallID),
			cell(ev.Agent),
			cell(ev.Initiator),
			cell(ev.Target),
			cell(result),
			cell(ev.Reason),
			cell(strings.Join(ev.PolicyIDs, ",")),
			cell(latency),
		)
	}
	return tw.Flush()
}

func cell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '\t' }) {
		q := strconv.QuoteToGraphic(s)
		return q
	}
	return s
}

// Command multi-agent is a runnable orchestration through mcpbroker: a
// planner agent (an MCP client of the broker) is granted a task, tries to
// delegate more than it holds (refused), delegates part of it, and calls a
// researcher agent as a tool through the broker. The researcher is an MCP
// server (run here, on 127.0.0.1:7441) that is itself an MCP client of the
// broker: it calls the notes tools back through the broker, presenting the
// chain token the broker put in the forwarded request. At the end it prints
// the chain the broker recorded.
//
// Start the broker first (see mcpbroker.yaml), then:
//
//	go run ./examples/multi-agent --data examples/multi-agent/mcpbroker-data
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

const (
	plannerID    = "spiffe://demo.local/agent/planner"
	researcherID = "spiffe://demo.local/agent/researcher"
)

func main() {
	brokerURL := flag.String("broker", "http://127.0.0.1:7440/mcp", "the broker's MCP URL")
	listen := flag.String("listen", "127.0.0.1:7441", "where the researcher agent serves MCP")
	data := flag.String("data", "examples/multi-agent/mcpbroker-data", "the broker's data dir (for its admin socket)")
	flag.Parse()
	if err := run(*brokerURL, *listen, *data); err != nil {
		fmt.Fprintln(os.Stderr, "multi-agent:", err)
		os.Exit(1)
	}
}

func run(brokerURL, listen, data string) error {
	plannerTok, researcherTok := os.Getenv("PLANNER_TOKEN"), os.Getenv("RESEARCHER_TOKEN")
	if plannerTok == "" || researcherTok == "" {
		return errors.New("set PLANNER_TOKEN and RESEARCHER_TOKEN to the values the broker was started with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 1. The researcher agent's MCP server.
	stop, err := serveResearcher(listen, brokerURL, researcherTok)
	if err != nil {
		return err
	}
	defer stop()

	// 2. An operator grants the planner a task (admin socket of the broker).
	handle, taskID, err := grant(filepath.Join(data, "admin.sock"), map[string]any{
		"agent": plannerID, "initiator": "alice", "ttl": "30m", "max_calls": 20,
		"tools": []string{"notes__*", "researcher__*"}, "purpose": "write a summary of the roadmap",
	})
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	fmt.Printf("granted task %s to the planner (handle %s…)\n", taskID, handle[:12])

	planner, err := connect(ctx, brokerURL, map[string]string{"Authorization": "Bearer " + plannerTok, "Mcp-Broker-Task": handle})
	if err != nil {
		return err
	}
	defer planner.Close()
	fmt.Println("planner's boundary:", show(call(ctx, planner, "broker__task", nil)))

	// 3. Delegation narrows, never widens.
	fmt.Println("delegate payments__transfer (outside the task):",
		show(call(ctx, planner, "broker__delegate", map[string]any{"agent": researcherID, "tools": []string{"payments__transfer"}})))
	fmt.Println("delegate notes reads for 10m, 5 calls:",
		show(call(ctx, planner, "broker__delegate", map[string]any{"agent": researcherID, "tools": []string{"notes__read_note", "notes__list_notes"}, "ttl": "10m", "max_calls": 5})))

	// 4. The planner calls the researcher as a tool, through the broker.
	if err := waitTool(ctx, planner, "researcher__research"); err != nil {
		return err
	}
	fmt.Println("researcher__research(roadmap):", show(call(ctx, planner, "researcher__research", map[string]any{"topic": "roadmap"})))
	fmt.Println("researcher__research(write):", show(call(ctx, planner, "researcher__research", map[string]any{"topic": "write"})))

	// 5. What the broker recorded: the chain back to alice.
	entries, err := audit(filepath.Join(data, "admin.sock"))
	if err != nil {
		return err
	}
	fmt.Println("\nrecorded decisions:")
	for _, e := range entries {
		ev := e.Event
		if ev.Type != "call.decided" || ev.Task == "" {
			continue
		}
		fmt.Printf("  %-22s %-16s initiator=%-6s chain=%s  %s\n", ev.Target, ev.Decision+" "+ev.Reason, ev.Initiator,
			strings.Join(ev.Chain, " > "), strings.Join(ev.PolicyIDs, ","))
	}
	return nil
}

// serveResearcher runs the researcher agent: an MCP server whose research
// tool calls the broker back with the chain token it was given.
func serveResearcher(listen, brokerURL, token string) (func(), error) {
	s := server.NewMCPServer("researcher", "1.0.0")
	s.AddTool(mcp.NewTool("research", mcp.WithDescription("Research a topic in the notes."),
		mcp.WithString("topic", mcp.Required())), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		chain, _ := req.Params.Meta.AdditionalFields["io.mcpbroker/chain"].(string)
		if chain == "" {
			return mcp.NewToolResultError("no chain token: call me through the broker"), nil
		}
		c, err := connect(ctx, brokerURL, map[string]string{"Authorization": "Bearer " + token, "Mcp-Broker-Chain": chain})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		topic := req.GetString("topic", "")
		if topic == "write" { // a researcher that tries to write is stopped by its own boundary
			return mcp.NewToolResultText("tried notes__write_note: " + show(call(ctx, c, "notes__write_note", map[string]any{"name": "x", "text": "y"}))), nil
		}
		list := show(call(ctx, c, "notes__list_notes", nil))
		note := show(call(ctx, c, "notes__read_note", map[string]any{"name": "shared/" + topic}))
		return mcp.NewToolResultText(fmt.Sprintf("notes: %s | %s", list, note)), nil
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: server.NewStreamableHTTPServer(s), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return func() { _ = hs.Close() }, nil
}

func connect(ctx context.Context, url string, headers map[string]string) (*client.Client, error) {
	t, err := transport.NewStreamableHTTP(url, transport.WithHTTPHeaders(headers))
	if err != nil {
		return nil, err
	}
	c := client.NewClient(t, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		return nil, fmt.Errorf("connect to the broker at %s: %w", url, err)
	}
	return c, nil
}

func call(ctx context.Context, c *client.Client, name string, args map[string]any) *mcp.CallToolResult {
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = name, args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return mcp.NewToolResultError(err.Error())
	}
	return res
}

func show(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if t, ok := c.(mcp.TextContent); ok {
			if b.Len() > 0 {
				b.WriteString(" ")
			}
			b.WriteString(strings.ReplaceAll(t.Text, "\n", " "))
		}
	}
	if r.IsError {
		return "REFUSED " + b.String()
	}
	return b.String()
}

func waitTool(ctx context.Context, c *client.Client, name string) error {
	for ctx.Err() == nil {
		lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
		if err == nil {
			for _, t := range lt.Tools {
				if t.Name == name {
					return nil
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("the broker never listed %s (is the researcher reachable?)", name)
}

func adminClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

func grant(sock string, g map[string]any) (string, string, error) {
	b, _ := json.Marshal(g)
	resp, err := adminClient(sock).Post("http://broker/v1/tasks", "application/json", bytes.NewReader(b))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var out struct {
		Handle string `json:"handle"`
		Task   struct {
			ID string `json:"id"`
		} `json:"task"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", "", err
	}
	if out.Error != "" {
		return "", "", errors.New(out.Error)
	}
	return out.Handle, out.Task.ID, nil
}

type entry struct {
	Event struct {
		Type      string   `json:"type"`
		Target    string   `json:"target"`
		Decision  string   `json:"decision"`
		Reason    string   `json:"reason"`
		Initiator string   `json:"initiator"`
		Chain     []string `json:"chain"`
		Task      string   `json:"task"`
		PolicyIDs []string `json:"policy_ids"`
	} `json:"event"`
}

func audit(sock string) ([]entry, error) {
	resp, err := adminClient(sock).Get("http://broker/v1/audit?type=call.decided")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []entry
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

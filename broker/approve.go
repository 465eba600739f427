package broker

import (
	"context"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
)

// approvalStatePrefix marks an MRTR requestState that belongs to the
// approval stage (relay states start with "mcpb1.").
const approvalStatePrefix = "mcpba1."

func isApprovalState(s string) bool { return strings.HasPrefix(s, approvalStatePrefix) }

// approveCall obtains a human decision for c, which policy says needs one.
// It returns either an answer the agent must get first (pending, e.g. an
// input_required elicitation), or the approval to decide again with
// (granted), or a refusal reason. Until the approval stage exists, every
// such call is refused: fail closed.
func (b *Broker) approveCall(ctx context.Context, c *call, req mcp.CallToolRequest) (pending *mcp.CallToolResult, granted *policies.Approval, reason Reason) {
	return nil, nil, ReasonApprovalRequired
}

// resumeApproval continues a call after the agent answered an approval
// elicitation (a retry carrying the approval stage's requestState).
func (b *Broker) resumeApproval(ctx context.Context, req mcp.CallToolRequest, t tools.Tool) (*mcp.CallToolResult, error) {
	return refusal(ReasonApprovalRequired, ""), nil
}

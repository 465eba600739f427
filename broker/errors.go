package broker

// Reason is a stable, safe reason code returned to agents with a call ID.
// The detail goes to the log and the audit record, never to the agent.
type Reason string

const (
	ReasonDeniedByPolicy   Reason = "denied_by_policy"
	ReasonApprovalRequired Reason = "approval_required"
	ReasonOutsideTask      Reason = "outside_task"
	ReasonToolUnavailable  Reason = "tool_unavailable"
	ReasonInvalidArguments Reason = "invalid_arguments"
	ReasonUnauthenticated  Reason = "unauthenticated"
	ReasonDownstreamError  Reason = "downstream_error"
	ReasonTimeout          Reason = "timeout"
	ReasonCancelled        Reason = "cancelled"
	ReasonInternal         Reason = "internal"
)

// message is the one-line text an agent sees for a reason.
func (r Reason) message() string {
	switch r {
	case ReasonDeniedByPolicy:
		return "the broker's policy does not allow this call"
	case ReasonApprovalRequired:
		return "this call needs a human approval, which is not available for it"
	case ReasonOutsideTask:
		return "this call is outside the session's task"
	case ReasonToolUnavailable:
		return "the server behind this tool is not available right now"
	case ReasonInvalidArguments:
		return "the arguments are not a JSON object"
	case ReasonUnauthenticated:
		return "the caller is not authenticated"
	case ReasonDownstreamError:
		return "the server behind this tool failed to answer"
	case ReasonTimeout:
		return "the call took longer than the broker allows"
	case ReasonCancelled:
		return "the call was cancelled"
	case ReasonApprovalDenied:
		return "a human did not approve this call"
	case ReasonApprovalTimeout:
		return "no human approved this call in time"
	}
	return "the broker could not complete this call"
}

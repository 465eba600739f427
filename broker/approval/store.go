package approval

// Stored is a record's request part and its history, as a Store keeps them.
type Stored struct {
	Record      *Record
	Transitions []Transition
}

// Store keeps approval records append-only. broker/store implements it
// with bbolt; the Service is its only user.
type Store interface {
	// CreateApproval writes r's request part and its first transition; it
	// fails if the ID exists.
	CreateApproval(r *Record, first Transition) error
	// AppendApprovalTransition appends t, whose Seq must be one more than
	// the last stored one (ErrConflict otherwise), or ErrUnknown.
	AppendApprovalTransition(id string, t Transition) error
	// Approval returns one record, or an error wrapping ErrUnknown.
	Approval(id string) (Stored, error)
	// Approvals returns every record, in ID order.
	Approvals() ([]Stored, error)
}

package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/corralhq/corral/model"
)

// Type identifies a log entry. Numbers are never reused. An entry whose type
// has IgnoreUnknown set may be skipped by a daemon that does not know it;
// any other unknown type stops the FSM, because skipping it would let that
// daemon's state diverge.
type Type uint8

// IgnoreUnknown marks entry types that older daemons may skip.
const IgnoreUnknown Type = 0x80

// Entry types. Append only; never renumber.
const (
	TypeRegisterHost  Type = 1
	TypeSetHostLabels Type = 2
	TypeSetHostMode   Type = 3
	TypeRemoveHost    Type = 4

	TypeCreateVM Type = 10
	TypePlaceVM  Type = 11
	TypeDeleteVM Type = 12

	TypeBatch Type = 30
)

// ErrUnknownType is returned by Decode for an entry type this daemon does not
// know and may not skip.
var ErrUnknownType = errors.New("unknown log entry type")

// Command is a typed body of a log entry.
type Command interface {
	Type() Type
}

// RegisterHost records a host's addresses, version and capacity. The first
// registration also sets mode active, RegisteredAt and labels; later ones keep
// labels, mode and RegisteredAt.
type RegisterHost struct {
	Host model.Host `json:"host"`
}

// SetHostLabels sets the labels in Set and removes those in Remove.
type SetHostLabels struct {
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// SetHostMode changes a host's mode.
type SetHostMode struct {
	Name string         `json:"name"`
	Mode model.HostMode `json:"mode"`
}

// RemoveHost forgets a host. Refused while VMs are assigned to it.
type RemoveHost struct {
	Name string `json:"name"`
}

// CreateVM adds a VM. Refused when the name or ID is taken.
type CreateVM struct {
	VM model.VM `json:"vm"`
}

// PlaceVM assigns a VM to a host, provided its generation is still
// Generation (compare and set); the VM's generation is then bumped.
type PlaceVM struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	Generation uint64 `json:"generation"`
}

// DeleteVM removes a VM.
type DeleteVM struct {
	Name string `json:"name"`
}

// Batch applies several commands in one log entry, in order. Each command
// succeeds or fails on its own; Apply returns a BatchResult.
type Batch struct {
	Entries [][]byte `json:"entries"`
}

func (RegisterHost) Type() Type  { return TypeRegisterHost }
func (SetHostLabels) Type() Type { return TypeSetHostLabels }
func (SetHostMode) Type() Type   { return TypeSetHostMode }
func (RemoveHost) Type() Type    { return TypeRemoveHost }
func (CreateVM) Type() Type      { return TypeCreateVM }
func (PlaceVM) Type() Type       { return TypePlaceVM }
func (DeleteVM) Type() Type      { return TypeDeleteVM }
func (Batch) Type() Type         { return TypeBatch }

// Encode serializes c as one type byte followed by its JSON body.
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", c, err)
	}
	return append([]byte{byte(c.Type())}, body...), nil
}

// MustEncode is Encode for commands that cannot fail to marshal (all of
// ours: plain structs of strings, numbers and maps).
func MustEncode(c Command) []byte {
	b, err := Encode(c)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode parses an entry. It returns (nil, nil) for an unknown type that
// carries IgnoreUnknown, and an error wrapping ErrUnknownType for any other
// unknown type.
func Decode(data []byte) (Command, error) {
	if len(data) == 0 {
		return nil, errors.New("empty log entry")
	}
	t, body := Type(data[0]), data[1:]
	switch t {
	case TypeRegisterHost:
		return decodeAs[RegisterHost](t, body)
	case TypeSetHostLabels:
		return decodeAs[SetHostLabels](t, body)
	case TypeSetHostMode:
		return decodeAs[SetHostMode](t, body)
	case TypeRemoveHost:
		return decodeAs[RemoveHost](t, body)
	case TypeCreateVM:
		return decodeAs[CreateVM](t, body)
	case TypePlaceVM:
		return decodeAs[PlaceVM](t, body)
	case TypeDeleteVM:
		return decodeAs[DeleteVM](t, body)
	case TypeBatch:
		return decodeAs[Batch](t, body)
	}
	if t&IgnoreUnknown != 0 {
		return nil, nil
	}
	return nil, fmt.Errorf("type %d: %w", t, ErrUnknownType)
}

func decodeAs[C Command](t Type, body []byte) (Command, error) {
	var c C
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("decode entry type %d: %w", t, err)
	}
	return c, nil
}

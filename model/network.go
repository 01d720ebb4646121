package model

// Network is a layer-2 network present on every host as a bridge.
type Network struct {
	Name string `json:"name"`
}

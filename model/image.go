package model

import "time"

// Image is a base disk image in the storage pool.
type Image struct {
	Name   string `json:"name"`
	Format string `json:"format"` // qcow2 or raw
	// Volume is the file name in the storage pool.
	Volume           string    `json:"volume"`
	SizeBytes        int64     `json:"size_bytes"`
	VirtualSizeBytes int64     `json:"virtual_size_bytes"`
	SHA256           string    `json:"sha256"`
	CreatedAt        time.Time `json:"created_at"`
	// Project holds the image; empty: DefaultProject, whose images every
	// project's VMs may use.
	Project string `json:"project,omitempty"`
}

// ImageVolume is the pool file name of the image called name.
func ImageVolume(name string) string { return "image-" + name }

// Package backup backs up VM disks into a backup target and restores them.
//
// A VM disk is a chain of layers: qcow2 overlays, each naming its backing
// file in its header, down to a base image (qcow2 or raw). A backup reads a
// chain while the guest keeps running: the layers it reads are frozen (the
// guest writes to a layer above them), and this package only ever opens
// them read-only. It has its own qcow2 reader (Image, Chain) that knows
// which clusters each layer allocates, so that a full backup skips what no
// layer holds and an incremental one reads only the layers above the
// previous backup's layer (OpenChain's stopAt): exactly what the guest
// wrote since.
//
// # Layout on the target
//
// A Target is a flat store of objects (DirTarget: a directory on local
// disk or NFS):
//
//	chunks/<xx>/<sha256>   a piece of disk data; <sha256> is the hex SHA-256
//	                       of its content, <xx> its first two digits
//	backups/<id>.json      a backup's Manifest: for each disk, its extents
//	                       (zero, or the SHA-256 of a chunk), in disk order
//
// Write stores a disk's chunks and returns its DiskManifest; the caller then
// stores the Manifest with PutManifest. The manifest is written last, so a
// backup whose manifest is listed is complete; chunks without a manifest
// are the leftovers of a backup that failed.
//
// # Content-addressed chunks
//
// Data is cut at multiples of the chunk size (4 MiB by default) of the
// virtual disk, and each piece is stored under its own hash. So a chunk is
// stored once however many backups (of however many VMs) hold it: a second
// full backup of an unchanged disk stores nothing new, and VMs cloned from
// one image share its chunks. The hash is also the check: a restore
// verifies every chunk against it before writing, so damage on the target
// is found, never silently restored. Deleting a backup deletes only the
// chunks no kept manifest references (DeleteBackup); backups and deletions
// on one target must not run at the same time.
//
// # Restore to raw
//
// Restore writes a raw, sparse file: the disk's data at its offsets, zeros
// left as holes. Raw is the simplest format to write correctly (no
// metadata to get wrong, writes in any order), and the caller converts it
// to qcow2 (qemu-img convert) or imports it as it needs.
package backup

// Package safefile reads whole files the way a loader should: only regular
// files, and no more bytes than the file had when it was opened. A device
// such as /dev/zero, a FIFO or a socket never ends, so os.ReadFile on one
// grows its buffer until memory runs out; here it is refused by name.
package safefile

import (
	"fmt"
	"io"
	"os"
)

// CheckRegular returns an error naming path unless it is a regular file
// (symbolic links are followed).
func CheckRegular(path string) (os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, describe(st.Mode()))
	}
	return st, nil
}

// ReadFile reads a regular file whole. It refuses devices, pipes, sockets
// and directories, and reads at most the size the file had when opened, so
// a file that keeps growing cannot make it allocate without bound.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s); give a file", path, describe(st.Mode()))
	}
	size := st.Size()
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("%s: read %d bytes: %w", path, size, err)
	}
	return buf, nil
}

// describe names a non-regular file mode for messages.
func describe(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.String()
}

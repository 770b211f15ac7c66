package imagebuild

import (
	"bytes"
	"debug/elf"
	"fmt"
)

// elfMachines maps a Go/OCI architecture to its ELF machine.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// CheckStatic fails unless b is a 64-bit little-endian ELF executable for
// arch ("amd64", "arm64") that needs no dynamic loader: no PT_INTERP program
// header and no DT_NEEDED libraries. An image without a base has no libc,
// and a binary that needs one fails only when the kubelet starts it, on
// every node at once; the builder refuses it here instead.
func CheckStatic(b []byte, arch string) error {
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("architecture %q: want one of amd64, arm64", arch)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		return fmt.Errorf("ELF %v %v, want 64-bit little-endian", f.Class, f.Data)
	}
	if f.Machine != want {
		return fmt.Errorf("ELF machine %v, want %v for %s", f.Machine, want, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %v is not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked: it asks for a program interpreter (PT_INTERP)")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("reading its dynamic section: %w", err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("dynamically linked: it needs %v", libs)
	}
	return nil
}

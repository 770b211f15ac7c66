package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Every command renders one document: a table for people (-o wide adds
// columns) or the same document as JSON or YAML for scripts. The documents'
// field names are a contract (docs/operations.md lists them): lists are
// {"items": [...]}, and fields are named as in the RhizomeNode status where
// the concept is the same (peer, peerAS, kind, state, prefixesReceived...).
// YAML is the JSON document converted, so both carry the same names.

const (
	outTable = ""
	outWide  = "wide"
	outJSON  = "json"
	outYAML  = "yaml"
)

// checkOutput refuses an unknown -o before any work is done.
func (g *globals) checkOutput() error {
	switch g.output {
	case outTable, outWide, outJSON, outYAML:
		return nil
	}
	return fmt.Errorf("-o %q: want json, yaml, wide or nothing (a table)", g.output)
}

// list is the shape of every list document.
type list[T any] struct {
	Items []T `json:"items"`
}

func listOf[T any](items []T) list[T] {
	if items == nil {
		items = []T{}
	}
	return list[T]{Items: items}
}

// emit writes doc as JSON or YAML, or calls table for the table formats.
func (g *globals) emit(doc any, table func(w io.Writer, wide bool) error) error {
	switch g.output {
	case outJSON, outYAML:
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		return g.writeStructured(b)
	case outTable, outWide:
		tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
		if err := table(tw, g.output == outWide); err != nil {
			return err
		}
		return tw.Flush()
	}
	return g.checkOutput()
}

// emitProto is emit for a protobuf message: its JSON is protojson's
// (lowerCamelCase proto field names, stable with the .proto file).
func (g *globals) emitProto(m proto.Message, table func(w io.Writer, wide bool) error) error {
	if g.output == outJSON || g.output == outYAML {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
		if err != nil {
			return err
		}
		return g.writeStructured(b)
	}
	return g.emit(nil, table)
}

func (g *globals) writeStructured(jsonDoc []byte) error {
	if g.output == outYAML {
		y, err := yaml.JSONToYAML(jsonDoc)
		if err != nil {
			return err
		}
		_, err = g.out.Write(y)
		return err
	}
	_, err := fmt.Fprintf(g.out, "%s\n", jsonDoc)
	return err
}

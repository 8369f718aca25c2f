package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"go.yaml.in/yaml/v3"
)

// fileVersion is the version of a rule file as the audit log names it
// (Set.Version): the SHA-256 of the file's content as data, decoded from
// YAML and encoded as JSON with sorted keys, so that comments, blank lines,
// indentation, key order, quoting and anchors do not change it and any
// change of a value does (a description too: the file is what an auditor
// reads). The first 16 hex digits are enough to tell versions apart.
func fileVersion(doc *yaml.Node) string {
	var v any
	if err := doc.Decode(&v); err != nil {
		return ""
	}
	canon, err := json.Marshal(yamlToJSONable(v))
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:8])
}

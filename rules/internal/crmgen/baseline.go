package crmgen

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/crmguard/crmguard/rules/mask"
)

// StdlibRewrite is the benchmarks' baseline: the rewrite the benchmark rule
// sets describe, done the usual way with encoding/json and map[string]any.
// A record of the list is kept when UserID owns it, one of UserTeams holds
// it, or it was last contacted over a year before Now (the public pool);
// kept records get phone and id_card masked, notes removed, email replaced
// by its HMAC-SHA256 under key (hex) and address.street removed.
func StdlibRewrite(doc, key []byte) ([]byte, error) {
	var v map[string]any
	if err := json.Unmarshal(doc, &v); err != nil {
		return nil, err
	}
	cutoff := Now.Add(-8760 * time.Hour)
	list, _ := v["list"].([]any)
	kept := list[:0]
	mac := hmac.New(sha256.New, key)
	for _, x := range list {
		rec, ok := x.(map[string]any)
		if !ok {
			continue
		}
		owner, _ := rec["owner_id"].(string)
		team, _ := rec["team"].(string)
		last, _ := rec["last_contact_at"].(string)
		vis := owner == UserID || slices.Contains(UserTeams, team)
		if !vis {
			ts, err := time.Parse(time.RFC3339, last)
			vis = err == nil && ts.Before(cutoff)
		}
		if !vis {
			continue
		}
		if s, ok := rec["phone"].(string); ok {
			rec["phone"] = string(mask.Phone(nil, s))
		}
		if s, ok := rec["id_card"].(string); ok {
			rec["id_card"] = string(mask.IDCard(nil, s))
		}
		delete(rec, "notes")
		if s, ok := rec["email"].(string); ok {
			mac.Reset()
			mac.Write([]byte(s))
			rec["email"] = hex.EncodeToString(mac.Sum(nil))
		}
		if a, ok := rec["address"].(map[string]any); ok {
			delete(a, "street")
		}
		kept = append(kept, rec)
	}
	v["list"] = kept
	return json.Marshal(v)
}

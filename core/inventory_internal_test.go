package core

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// readInventoryFlat is inventoryFlat for an inventory on its own.
func readInventoryFlat(raw []byte) (flatInventory, bool) {
	d := decoder{data: raw}
	d.shareStrings()
	inv, err := d.inventoryFlat()
	return inv, err == nil && d.end() == nil
}

// FuzzReadInventoryFlat: the one-pass inventory reader either declines or returns exactly the
// inventory the checked reader returns (which also says the errors); the seeds are the
// inventories of the select_keys vectors and a few near misses of each rule.
func FuzzReadInventoryFlat(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"@a:hs":{}}`,
		`{"@a:hs":{"D":{}}}`,
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":2,"key":"k"},{"batch":1,"key":{"key":"x","signatures":{"@a:hs":{"e:D":"s"}}},"key_id":"s:B"}],"fallback_keys":[{"key_id":"s:F","key":"f","used":true}]}}}`,
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":-1,"key":"k"}]}}}`,
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":1.5,"key":"k"}]}}}`,
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","key":"k"}]}}}`,
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":1,"key":{"b":1,"a":2,"key":"k"}}]}}}`,
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":1,"key":"k","key":"l"}]}}}`,
		`{"@a:hs":{"D":{"fallback_keys":[{"key_id":"s:A","key":"k"},{"key_id":"s:B","key":"k"}]}}}`,
		`{"@a:hs":{"D":{"fallback_keys":[{"key_id":"s:A","key":"k","used":null}]}}}`,
		`{"@a:hs":{"D":{"fallback_keys":[{"key_id":"s:A","key":"k","batch":1}]}}}`,
		`{"@a:hs":{"D":{}},"@a:hs":{}}`,
		`{"@a:hs":{"D":{},"D":{}}}`,
		`{"a:hs":{}}`,
		`{"@a\u003ahs":{"D\n":{"one_time_keys":[]}}}`,
		` { "@a:hs" : { "D" : { "one_time_keys" : [ { "key_id" : "s:A" , "batch" : 0 , "key" : "k" } ] } } } `,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("testdata/vectors/select.json"); err == nil {
		var file struct {
			Vectors []struct {
				Input struct {
					Inventory json.RawMessage `json:"inventory"`
				} `json:"input"`
			} `json:"vectors"`
		}
		if json.Unmarshal(data, &file) == nil {
			for _, v := range file.Vectors {
				if len(v.Input.Inventory) > 0 {
					f.Add([]byte(v.Input.Inventory))
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		flat, ok := readInventoryFlat(data)
		checked, err := readInventoryChecked(data)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("flat reader accepted what the checked reader rejects: %v", err)
		}
		if a, b := flat.appendJSON(nil), checked.flat().appendJSON(nil); !bytes.Equal(a, b) {
			t.Fatalf("flat %s\nchecked %s", a, b)
		}
	})
}

// FuzzReadSelectKeysFlat: the one-pass reader of select_keys' whole input either declines or
// reads the inventory and requests the checked reader reads.
func FuzzReadSelectKeysFlat(f *testing.F) {
	f.Add([]byte(`{"inventory":{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":2,"key":"k"}]}}},"requests":[{"one_time_keys":{"@a:hs":{"D":"s"}}}]}`))
	f.Add([]byte(`{"requests":[],"inventory":{}}`))
	f.Add([]byte(`{"inventory":{}}`))
	f.Add([]byte(`{"inventory":{},"requests":[],"requests":[]}`))
	f.Add([]byte(`{"inventory":{},"requests":[],"other":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		flat, reqs, ok := readSelectKeysFlat(data)
		checked, creqs, err := readSelectKeysChecked(data)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("flat reader accepted what the checked reader rejects: %v", err)
		}
		if !bytes.Equal(reqs, creqs) {
			t.Fatalf("requests: flat %q, checked %q", reqs, creqs)
		}
		if a, b := flat.appendJSON(nil), checked.appendJSON(nil); !bytes.Equal(a, b) {
			t.Fatalf("flat %s\nchecked %s", a, b)
		}
	})
}

// TestReadInventoryFlatTakesTheRule: an inventory as hosts send it (canonical keys, no escapes)
// is read by the one-pass reader, so select_keys' benchmark measures it.
func TestReadInventoryFlatTakesTheRule(t *testing.T) {
	for _, s := range []string{
		`{"@a:hs":{"D":{"one_time_keys":[{"key_id":"s:A","batch":2,"key":"k"}],"fallback_keys":[{"key_id":"s:F","key":{"key":"f","signatures":{"@a:hs":{"ed25519:D":"sig"}}},"used":false}]}}}`,
		` { "@a:hs" : { "D" : { "one_time_keys" : [ { "key_id" : "s:A" , "batch" : 0 , "key" : "k" } ] } } } `,
	} {
		if _, ok := readInventoryFlat([]byte(s)); !ok {
			t.Errorf("declined %s", s)
		}
	}
}

package core_test

import (
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// TestAnswerNotAnObject pins the messages hosts see for a claim answer that is JSON but not an
// object: the two readers share their code, not their wording.
func TestAnswerNotAnObject(t *testing.T) {
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@a:hs2":{"D":"signed_curve25519"}}}`), core.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = core.ClassifyClaim(req, []byte(`[]`))
	if want := "M_BAD_JSON: the claim response must be a JSON object"; err == nil || err.Error() != want {
		t.Errorf("ClassifyClaim: %v, want %s", err, want)
	}
	_, err = core.CompleteUpstream(req, []byte(`[]`), core.CompleteOptions{ServerName: "hs1"})
	if err == nil {
		t.Fatal("CompleteUpstream accepted [] as an answer")
	}
	if want := "the upstream answer is not a JSON object"; !strings.Contains(err.Error(), want) {
		t.Errorf("CompleteUpstream: %v, want %q", err, want)
	}
}

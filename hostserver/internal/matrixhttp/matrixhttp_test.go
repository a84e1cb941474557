package matrixhttp

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// chunked hides the length of a body, as a chunked request does.
type chunked struct{ io.Reader }

func TestReadBody(t *testing.T) {
	for _, withWriter := range []bool{false, true} {
		for _, tc := range []struct {
			name   string
			body   io.Reader
			length int64
			want   string // the body, or the error
		}{
			{"at the limit", strings.NewReader("0123456789"), 10, "0123456789"},
			{"at the limit, length unknown", chunked{strings.NewReader("0123456789")}, -1, "0123456789"},
			{"length over the limit", strings.NewReader("0123456789x"), 11, "M_TOO_LARGE: request body is 11 bytes; the limit is 10"},
			{"over the limit, length unknown", chunked{strings.NewReader("0123456789x")}, -1, "M_TOO_LARGE: request body is more than 10 bytes; the limit is 10"},
			{"unreadable", chunked{io.MultiReader(strings.NewReader("01"), errReader{})}, -1, "M_NOT_JSON: could not read the request body: broken"},
		} {
			r := httptest.NewRequest(http.MethodPost, "/", tc.body)
			r.ContentLength = tc.length
			var w http.ResponseWriter
			if withWriter {
				w = httptest.NewRecorder()
			}
			got, err := ReadBody(w, r, 10)
			if err != nil {
				var ce *core.Error
				if !errors.As(err, &ce) {
					t.Fatalf("%s: %T is not a *core.Error", tc.name, err)
				}
				if s := string(ce.Code) + ": " + ce.Message; s != tc.want {
					t.Errorf("%s (writer %v): %s, want %s", tc.name, withWriter, s, tc.want)
				}
			} else if string(got) != tc.want {
				t.Errorf("%s (writer %v): %q, want %q", tc.name, withWriter, got, tc.want)
			}
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken") }

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	if err := WriteError(w, StatusOf(core.CodeTooLarge), core.CodeTooLarge, `too "big"`); err != nil {
		t.Fatal(err)
	}
	want := `{"errcode":"M_TOO_LARGE","error":"too \"big\""}`
	if w.Code != 413 || w.Body.String() != want || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Content-Length") != "47" {
		t.Errorf("%d %v %s", w.Code, w.Header(), w.Body)
	}
}

func TestStatusOf(t *testing.T) {
	for code, status := range map[core.Code]int{
		core.CodeNotJSON: 400, core.CodeBadJSON: 400, core.CodeInvalidParam: 400, core.CodeTooLarge: 413,
		CodeMissingToken: 401, CodeUnknownToken: 401, CodeUnauthorized: 401, CodeForbidden: 403,
		CodeUnrecognized: 404, CodeNotFound: 404, core.CodeUnknown: 500, "M_OTHER": 500,
	} {
		if got := StatusOf(code); got != status {
			t.Errorf("%s: %d, want %d", code, got, status)
		}
	}
}

func TestSetCORS(t *testing.T) {
	h := http.Header{}
	SetCORS(h)
	if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Methods") != CORSAllowMethods || h.Get("Access-Control-Allow-Headers") != CORSAllowHeaders {
		t.Error(h)
	}
}

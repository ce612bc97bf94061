package wxpaysim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/wxcancel/wxcancel/wxpay"
)

// Endpoints, named after the command types that call them.
const (
	EndpointValidateCancel         = "validate-cancel"
	EndpointQueryCancelWithdraw    = "query-cancel-withdraw"
	EndpointConfirmCancel          = "confirm-cancel"
	EndpointQueryCancelApplication = "query-cancel-application"
	EndpointCancelApplyment        = "cancel-applyment"
	EndpointApplyCancelWithdraw    = "apply-cancel-withdraw"
)

// Endpoints lists every simulated endpoint.
func Endpoints() []string {
	return []string{EndpointValidateCancel, EndpointQueryCancelWithdraw, EndpointConfirmCancel,
		EndpointQueryCancelApplication, EndpointCancelApplyment, EndpointApplyCancelWithdraw}
}

const (
	prefixWithdraw     = "/v3/ecommerce/account/apply-cancel-withdraw"
	prefixApplications = "/v3/ecommerce/account/cancel-applications/out-apply-no/"
	prefixApplyment    = "/v3/apply4subject/applyment/"
)

// route is what a request asks for.
type route struct {
	endpoint    string
	keys        []string // the ids the request names, for fault matching
	param       string   // the path parameter, unescaped
	byOutNo     bool     // query-cancel-withdraw by out_request_no
	applymentID int64    // cancel-applyment: ?applyment_id or the numeric path id
	serial      string   // the Wechatpay-Serial request header
}

// route maps a request to an endpoint; unknown paths and wrong methods are
// answered 404 NOT_FOUND and 405 as WeChat Pay's gateway does.
func (s *Server) route(r *http.Request, body []byte) (route, *apiError) {
	rt := route{serial: r.Header.Get("Wechatpay-Serial")}
	path := r.URL.EscapedPath()
	want := http.MethodGet
	seg := func(prefix string) (string, bool) {
		rest, ok := strings.CutPrefix(path, prefix)
		if !ok || rest == "" || strings.Contains(rest, "/") {
			return "", false
		}
		v, err := url.PathUnescape(rest)
		return v, err == nil
	}
	switch {
	case path == prefixWithdraw:
		rt.endpoint, want = EndpointApplyCancelWithdraw, http.MethodPost
		var b struct {
			SubMchid     string `json:"sub_mchid"`
			OutRequestNo string `json:"out_request_no"`
		}
		_ = json.Unmarshal(body, &b)
		rt.keys = nonEmpty(b.OutRequestNo, b.SubMchid)
	case path == prefixWithdraw+"/confirm":
		rt.endpoint, want = EndpointConfirmCancel, http.MethodPost
		var b struct {
			ApplymentID  string `json:"applyment_id"`
			OutRequestNo string `json:"out_request_no"`
			SubMchid     string `json:"sub_mchid"`
		}
		_ = json.Unmarshal(body, &b)
		rt.keys = nonEmpty(b.ApplymentID, b.OutRequestNo, b.SubMchid)
	case strings.HasPrefix(path, prefixWithdraw+"/validate-cancel/"):
		rt.endpoint = EndpointValidateCancel
		v, ok := seg(prefixWithdraw + "/validate-cancel/")
		if !ok {
			return rt, errorf(http.StatusNotFound, wxpay.CodeNotFound, "no such API: %s", path)
		}
		rt.param, rt.keys = v, []string{v}
	case strings.HasPrefix(path, prefixWithdraw+"/applyment-id/"), strings.HasPrefix(path, prefixWithdraw+"/out-request-no/"):
		rt.endpoint = EndpointQueryCancelWithdraw
		rt.byOutNo = strings.HasPrefix(path, prefixWithdraw+"/out-request-no/")
		prefix := prefixWithdraw + "/applyment-id/"
		if rt.byOutNo {
			prefix = prefixWithdraw + "/out-request-no/"
		}
		v, ok := seg(prefix)
		if !ok {
			return rt, errorf(http.StatusNotFound, wxpay.CodeNotFound, "no such API: %s", path)
		}
		rt.param, rt.keys = v, []string{v}
	case strings.HasPrefix(path, prefixApplications):
		rt.endpoint = EndpointQueryCancelApplication
		v, ok := seg(prefixApplications)
		if !ok {
			return rt, errorf(http.StatusNotFound, wxpay.CodeNotFound, "no such API: %s", path)
		}
		rt.param, rt.keys = v, []string{v}
	case strings.HasPrefix(path, prefixApplyment) && strings.HasSuffix(path, "/cancel"):
		rt.endpoint, want = EndpointCancelApplyment, http.MethodPost
		// …/applyment/cancel has no id segment: CutSuffix fails on "cancel".
		inner, hasID := strings.CutSuffix(strings.TrimPrefix(path, prefixApplyment), "/cancel")
		v, err := url.PathUnescape(inner)
		if !hasID || err != nil || v == "" || strings.Contains(inner, "/") {
			return rt, errorf(http.StatusNotFound, wxpay.CodeNotFound, "no such API: %s", path)
		}
		rt.param = v
		if q := r.URL.Query().Get("applyment_id"); q != "" {
			id, err := strconv.ParseInt(q, 10, 64)
			if err != nil || id <= 0 {
				return rt, &apiError{status: http.StatusBadRequest, code: wxpay.CodeParamError, message: "applyment_id不是正整数",
					detail: map[string]any{"field": "applyment_id", "location": "query"}}
			}
			rt.applymentID = id
		}
		rt.keys = nonEmpty(v, r.URL.Query().Get("applyment_id"))
	default:
		return rt, errorf(http.StatusNotFound, wxpay.CodeNotFound, "no such API: %s", path)
	}
	if r.Method != want {
		return rt, errorf(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "%s is not allowed on %s", r.Method, path)
	}
	return rt, nil
}

func nonEmpty(vs ...string) []string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

package wxpaysim

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
)

// defaultRevokeAfter is how long an approved application waits for
// confirmation before WeChat Pay revokes it.
const defaultRevokeAfter = 30 * 24 * time.Hour

// cst is the zone WeChat Pay writes its times in.
var cst = time.FixedZone("CST", 8*3600)

// SubMerchant is a sub-merchant of the platform as validate-cancel reports it.
type SubMerchant struct {
	SubMchid     string
	State        wxpay.MerchantState  // default NORMAL
	Result       wxpay.ValidateResult // default ALLOW_CANCEL_WITHDRAW
	Accounts     []wxpay.AccountInfo
	BlockReasons []wxpay.BlockReason
}

// CancelWithdraw is a cancel-withdraw application (注销提现申请单).
type CancelWithdraw struct {
	ApplymentID  string
	OutRequestNo string
	SubMchid     string
	State        wxpay.CancelState    // default ACCEPTED
	Withdraw     wxpay.WithdrawChoice // default NOT_APPLY_WITHDRAW
	// WithdrawState is the withdrawal's state once the funds are being
	// paid (FUND_PROCESSING, FINISH with APPLY_WITHDRAW); empty before.
	WithdrawState wxpay.WithdrawState
	ModifyTime    time.Time // default: when it was put
	// Payee is the payee as the simulator decrypted it from the application
	// (nil when none was given), so tests can check the encryption.
	Payee *wxpay.PayeeInfo
}

// CancelApplication is an old-flow cancel application.
type CancelApplication struct {
	OutApplyNo   string
	SubMchid     string
	State        wxpay.ApplicationState // default REVIEWING
	RejectReason string
	UpdateTime   time.Time // default: when it was put
}

// Applyment is an apply4subject application (开户意愿申请单).
type Applyment struct {
	BusinessCode string
	ApplymentID  int64
	Canceled     bool
}

type model struct {
	step        time.Duration
	revokeAfter time.Duration
	auto        bool
	rng         *mrand.Rand // shared with the server; used under mu only

	mu           sync.Mutex
	merchants    map[string]*SubMerchant
	withdrawals  map[string]*CancelWithdraw // by applyment_id
	byOutNo      map[string]*CancelWithdraw // by out_request_no
	applications map[string]*CancelApplication
	applyments   map[string]*Applyment // by business_code
	applymentIDs map[int64]*Applyment
	nextID       int64
}

func newModel(step, revokeAfter time.Duration, auto bool, seed uint64) *model {
	if revokeAfter == 0 {
		revokeAfter = defaultRevokeAfter
	}
	return &model{
		step: step, revokeAfter: revokeAfter, auto: auto, rng: mrand.New(mrand.NewPCG(seed, seed^0x9E3779B97F4A7C15)),
		merchants: map[string]*SubMerchant{}, withdrawals: map[string]*CancelWithdraw{}, byOutNo: map[string]*CancelWithdraw{},
		applications: map[string]*CancelApplication{}, applyments: map[string]*Applyment{}, applymentIDs: map[int64]*Applyment{},
		nextID: 2000001000000000,
	}
}

// PutSubMerchant adds or replaces a sub-merchant.
func (s *Server) PutSubMerchant(m SubMerchant) {
	if m.State == "" {
		m.State = wxpay.MerchantNormal
	}
	if m.Result == "" {
		m.Result = wxpay.AllowCancelWithdraw
	}
	s.model.mu.Lock()
	defer s.model.mu.Unlock()
	s.model.merchants[m.SubMchid] = &m
}

// PutCancelWithdraw adds or replaces a cancel-withdraw application; an empty
// ApplymentID is generated. It returns the application as stored.
func (s *Server) PutCancelWithdraw(a CancelWithdraw) CancelWithdraw {
	if a.State == "" {
		a.State = wxpay.CancelAccepted
	}
	if a.Withdraw == "" {
		a.Withdraw = wxpay.NotApplyWithdraw
	}
	if a.Withdraw == wxpay.ApplyWithdraw && a.WithdrawState == "" {
		// Put straight into a state of the withdrawal: the one it shows.
		switch a.State {
		case wxpay.CancelFundProcessing:
			a.WithdrawState = wxpay.WithdrawProcessing
		case wxpay.CancelFinish:
			a.WithdrawState = wxpay.WithdrawSucceed
		}
	}
	if a.ModifyTime.IsZero() {
		a.ModifyTime = s.clock()
	}
	m := s.model
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.ApplymentID == "" {
		a.ApplymentID = m.newID()
	}
	if a.OutRequestNo == "" {
		a.OutRequestNo = defaultOutRequestNo(a.ApplymentID)
	}
	m.withdrawals[a.ApplymentID] = &a
	m.byOutNo[a.OutRequestNo] = &a
	return a
}

// CancelWithdraw returns the application applymentID in its current state.
func (s *Server) CancelWithdraw(applymentID string) (CancelWithdraw, bool) {
	m := s.model
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.withdrawals[applymentID]
	if !ok {
		return CancelWithdraw{}, false
	}
	m.advance(a, s.clock())
	return *a, true
}

// PutCancelApplication adds or replaces an old-flow cancel application.
func (s *Server) PutCancelApplication(a CancelApplication) {
	if a.State == "" {
		a.State = wxpay.ApplicationReviewing
	}
	if a.UpdateTime.IsZero() {
		a.UpdateTime = s.clock()
	}
	s.model.mu.Lock()
	defer s.model.mu.Unlock()
	s.model.applications[a.OutApplyNo] = &a
}

// PutApplyment adds or replaces an apply4subject application; a zero
// ApplymentID is generated. It returns the applyment as stored.
func (s *Server) PutApplyment(a Applyment) Applyment {
	m := s.model
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.ApplymentID == 0 {
		a.ApplymentID, _ = strconv.ParseInt(m.newID(), 10, 64)
	}
	m.applyments[a.BusinessCode] = &a
	m.applymentIDs[a.ApplymentID] = &a
	return a
}

// Applyment returns the applyment with business code code.
func (s *Server) Applyment(code string) (Applyment, bool) {
	s.model.mu.Lock()
	defer s.model.mu.Unlock()
	a, ok := s.model.applyments[code]
	if !ok {
		return Applyment{}, false
	}
	return *a, true
}

func (m *model) newID() string {
	m.nextID += 1 + int64(m.rng.IntN(1000))
	return strconv.FormatInt(m.nextID, 10)
}

// advance moves an application through the states that follow by
// themselves, one Step each (RevokeAfter while it waits for confirmation).
func (m *model) advance(a *CancelWithdraw, now time.Time) {
	if m.step <= 0 {
		return
	}
	for {
		next, withdrawal, ok := m.nextState(a)
		wait := m.step
		if a.State == wxpay.CancelWaitingMerchantConfirm {
			wait = m.revokeAfter
		}
		if !ok || now.Sub(a.ModifyTime) < wait {
			return
		}
		a.State, a.WithdrawState, a.ModifyTime = next, withdrawal, a.ModifyTime.Add(wait)
		if next == wxpay.CancelCanceled {
			if mer, ok := m.merchants[a.SubMchid]; ok {
				mer.State, mer.Result = wxpay.MerchantHasBeenCancelled, wxpay.NotAllowCancelWithdraw
			}
		}
	}
}

// nextState is the state, and withdrawal state, an application moves to by
// itself, if any.
func (m *model) nextState(a *CancelWithdraw) (wxpay.CancelState, wxpay.WithdrawState, bool) {
	switch a.State {
	case wxpay.CancelAccepted:
		return wxpay.CancelReviewing, "", true
	case wxpay.CancelReviewing:
		if mer, ok := m.merchants[a.SubMchid]; ok && mer.Result == wxpay.NotAllowCancelWithdraw {
			return wxpay.CancelRejected, "", true
		}
		return wxpay.CancelWaitingMerchantConfirm, "", true
	case wxpay.CancelWaitingMerchantConfirm:
		return wxpay.CancelRevoked, "", true
	case wxpay.CancelSystemProcessing:
		return wxpay.CancelCanceled, "", true
	case wxpay.CancelCanceled:
		if a.Withdraw == wxpay.ApplyWithdraw {
			return wxpay.CancelFundProcessing, wxpay.WithdrawProcessing, true
		}
		return wxpay.CancelFinish, "", true
	case wxpay.CancelFundProcessing:
		if a.WithdrawState == wxpay.WithdrawProcessing {
			return wxpay.CancelFundProcessing, wxpay.WithdrawSucceed, true
		}
		return wxpay.CancelFinish, wxpay.WithdrawSucceed, true
	}
	return "", "", false
}

func (m *model) advanceApplication(a *CancelApplication, now time.Time) {
	if m.step > 0 && a.State == wxpay.ApplicationReviewing && now.Sub(a.UpdateTime) >= m.step {
		a.State, a.UpdateTime = wxpay.ApplicationCancelSuccess, a.UpdateTime.Add(m.step)
	}
}

var stateDescriptions = map[wxpay.CancelState]string{
	wxpay.CancelAccepted:               "已受理",
	wxpay.CancelReviewing:              "审核中",
	wxpay.CancelRejected:               "审核驳回",
	wxpay.CancelWaitingMerchantConfirm: "待商户确认",
	wxpay.CancelRevoked:                "已撤销",
	wxpay.CancelSystemProcessing:       "系统处理中",
	wxpay.CancelCanceled:               "已注销",
	wxpay.CancelFundProcessing:         "资金处理中",
	wxpay.CancelFinish:                 "已完成",
}

// view is the query answer for an application.
func (m *model) view(a *CancelWithdraw) wxpay.CancelWithdrawApplication {
	v := wxpay.CancelWithdrawApplication{
		ApplymentID: a.ApplymentID, OutRequestNo: a.OutRequestNo, SubMchid: a.SubMchid,
		CancelState: a.State, CancelStateDescription: stateDescriptions[a.State], Withdraw: a.Withdraw,
		ModifyTime: a.ModifyTime.In(cst).Format(time.RFC3339),
	}
	mer := m.merchants[a.SubMchid]
	if mer != nil {
		v.AccountInfo = mer.Accounts
	}
	if a.Withdraw == wxpay.ApplyWithdraw && (a.State == wxpay.CancelFundProcessing || a.State == wxpay.CancelFinish) {
		ws := a.WithdrawState
		pay := wxpay.PayProcessing
		if ws == wxpay.WithdrawSucceed {
			pay = wxpay.PaySucceed
		}
		v.WithdrawState = ws
		if mer != nil {
			for _, acc := range mer.Accounts {
				if acc.Amount > 0 {
					v.AccountWithdrawResult = append(v.AccountWithdrawResult, wxpay.AccountWithdrawResult{OutAccountType: acc.OutAccountType, PayState: pay})
				}
			}
		}
	}
	return v
}

// handle executes an authenticated request and returns its answer.
func (m *model) handle(rt route, body []byte, key *rsa.PrivateKey, keyID string, now time.Time) (int, []byte, *apiError) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch rt.endpoint {
	case EndpointValidateCancel:
		return m.validateCancel(rt)
	case EndpointQueryCancelWithdraw:
		return m.queryCancelWithdraw(rt, now)
	case EndpointConfirmCancel:
		return m.confirmCancel(body, now)
	case EndpointQueryCancelApplication:
		return m.queryCancelApplication(rt, now)
	case EndpointCancelApplyment:
		return m.cancelApplyment(rt)
	case EndpointApplyCancelWithdraw:
		return m.applyCancelWithdraw(rt, body, key, keyID, now)
	}
	return 0, nil, errorf(http.StatusNotFound, wxpay.CodeNotFound, "no such API")
}

func ok(v any) (int, []byte, *apiError) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, nil, errorf(http.StatusInternalServerError, wxpay.CodeSystemError, "encoding the answer: %v", err)
	}
	return http.StatusOK, b, nil
}

func paramError(field, location, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: wxpay.CodeParamError, message: fmt.Sprintf(format, args...),
		detail: map[string]any{"field": field, "location": location}}
}

var (
	digitsOnly = regexp.MustCompile(`^[0-9]{1,32}$`)
	identifier = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

func (m *model) merchant(subMchid string) *SubMerchant {
	mer, found := m.merchants[subMchid]
	if !found && m.auto {
		mer = &SubMerchant{SubMchid: subMchid, State: wxpay.MerchantNormal, Result: wxpay.AllowCancelWithdraw,
			Accounts: []wxpay.AccountInfo{{OutAccountType: wxpay.BasicAccount, Amount: 0}}}
		m.merchants[subMchid] = mer
	}
	return mer
}

// validateCancel: an unknown sub-merchant is 403 NO_AUTH (not a sub-merchant
// of this platform).
func (m *model) validateCancel(rt route) (int, []byte, *apiError) {
	if !digitsOnly.MatchString(rt.param) {
		return 0, nil, paramError("sub_mchid", "path", "sub_mchid格式错误")
	}
	mer := m.merchant(rt.param)
	if mer == nil {
		return 0, nil, errorf(http.StatusForbidden, wxpay.CodeNoAuth, "该商户不是本平台的二级商户")
	}
	v := wxpay.ValidateCancelResponse{SubMchid: mer.SubMchid, MerchantState: mer.State, ValidateResult: mer.Result,
		AccountInfo: mer.Accounts, BlockReasons: mer.BlockReasons}
	if v.AccountInfo == nil {
		v.AccountInfo = []wxpay.AccountInfo{}
	}
	return ok(v)
}

func (m *model) findWithdraw(applymentID, outRequestNo, subMchid string, now time.Time) *CancelWithdraw {
	var a *CancelWithdraw
	if applymentID != "" {
		a = m.withdrawals[applymentID]
	} else {
		a = m.byOutNo[outRequestNo]
	}
	if a == nil && m.auto {
		a = &CancelWithdraw{ApplymentID: applymentID, OutRequestNo: outRequestNo, SubMchid: subMchid,
			State: wxpay.CancelWaitingMerchantConfirm, Withdraw: wxpay.NotApplyWithdraw, ModifyTime: now}
		if a.ApplymentID == "" {
			a.ApplymentID = m.newID()
		}
		if a.OutRequestNo == "" {
			a.OutRequestNo = defaultOutRequestNo(a.ApplymentID)
		}
		m.withdrawals[a.ApplymentID] = a
		m.byOutNo[a.OutRequestNo] = a
	}
	if a != nil {
		m.advance(a, now)
	}
	return a
}

func (m *model) queryCancelWithdraw(rt route, now time.Time) (int, []byte, *apiError) {
	field := "applyment_id"
	id, outNo := rt.param, ""
	if rt.byOutNo {
		field, id, outNo = "out_request_no", "", rt.param
	}
	if !identifier.MatchString(rt.param) {
		return 0, nil, paramError(field, "path", "%s格式错误", field)
	}
	a := m.findWithdraw(id, outNo, "", now)
	if a == nil {
		return 0, nil, errorf(http.StatusNotFound, wxpay.CodeNotFound, "申请单不存在")
	}
	return ok(m.view(a))
}

// defaultOutRequestNo is the out_request_no of a cancel-withdraw application
// created without one.
func defaultOutRequestNo(applymentID string) string { return "SIM" + applymentID }

// ConfirmationAnswer returns the body of the answer to a successful
// confirm-cancel of application applymentID of subMchid, created without an
// out_request_no (by AutoCreate on first sight, or PutCancelWithdraw), for
// Server.Presign.
func ConfirmationAnswer(applymentID, subMchid string) []byte {
	_, body, _ := ok(confirmationAnswer(applymentID, subMchid, defaultOutRequestNo(applymentID)))
	return body
}

func confirmationAnswer(applymentID, subMchid, outRequestNo string) wxpay.ConfirmCancelResponse {
	return wxpay.ConfirmCancelResponse{ApplymentID: applymentID, SubMchid: subMchid, OutRequestNo: outRequestNo}
}

// confirmCancel: an unknown application is 404 NOT_FOUND; a sub_mchid that
// is not the application's is 400 NO_AUTH; an application not awaiting
// confirmation is 403 RULE_LIMIT (confirm-cancel.txt).
func (m *model) confirmCancel(body []byte, now time.Time) (int, []byte, *apiError) {
	var req wxpay.ConfirmCancelRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, paramError("", "body", "请求体不是合法的JSON: %v", err)
	}
	for _, f := range []struct{ name, v string }{{"sub_mchid", req.SubMchid}, {"operator_identification", req.OperatorIdentification},
		{"confirm_time", req.ConfirmTime}, {"cancel_contract_version", req.CancelContractVersion}} {
		if f.v == "" {
			return 0, nil, paramError(f.name, "body", "缺少参数%s", f.name)
		}
	}
	if req.ApplymentID == "" && req.OutRequestNo == "" {
		return 0, nil, paramError("applyment_id", "body", "applyment_id和out_request_no不能同时为空")
	}
	if _, err := time.Parse(time.RFC3339, req.ConfirmTime); err != nil {
		return 0, nil, paramError("confirm_time", "body", "confirm_time不是RFC 3339格式")
	}
	a := m.findWithdraw(req.ApplymentID, req.OutRequestNo, req.SubMchid, now)
	if a == nil {
		return 0, nil, errorf(http.StatusNotFound, wxpay.CodeNotFound, "申请单不存在")
	}
	if req.ApplymentID != "" && req.OutRequestNo != "" && a.OutRequestNo != req.OutRequestNo {
		return 0, nil, paramError("out_request_no", "body", "applyment_id与out_request_no不匹配")
	}
	if a.SubMchid != "" && a.SubMchid != req.SubMchid {
		return 0, nil, errorf(http.StatusBadRequest, wxpay.CodeNoAuth, "请求非法")
	}
	if a.State != wxpay.CancelWaitingMerchantConfirm {
		return 0, nil, errorf(http.StatusForbidden, wxpay.CodeRuleLimit, "无需确认")
	}
	a.SubMchid = req.SubMchid
	a.State, a.ModifyTime = wxpay.CancelSystemProcessing, now
	return ok(confirmationAnswer(a.ApplymentID, a.SubMchid, a.OutRequestNo))
}

func (m *model) queryCancelApplication(rt route, now time.Time) (int, []byte, *apiError) {
	if !identifier.MatchString(rt.param) {
		return 0, nil, paramError("out_apply_no", "path", "out_apply_no格式错误")
	}
	a, found := m.applications[rt.param]
	if !found && m.auto {
		a = &CancelApplication{OutApplyNo: rt.param, State: wxpay.ApplicationReviewing, UpdateTime: now}
		m.applications[rt.param] = a
	}
	if a == nil {
		return 0, nil, errorf(http.StatusNotFound, wxpay.CodeNotFound, "申请单不存在")
	}
	m.advanceApplication(a, now)
	return ok(wxpay.CancelApplication{OutApplyNo: a.OutApplyNo, SubMchid: a.SubMchid, RejectReason: a.RejectReason,
		CancelState: a.State, UpdateTime: a.UpdateTime.In(cst).Format(time.RFC3339)})
}

// cancelApplyment: an unknown applyment, a business_code and applyment_id
// that do not belong together, or one already cancelled are 400
// INVALID_REQUEST (cancel-applyment.txt lists no NOT_FOUND).
func (m *model) cancelApplyment(rt route) (int, []byte, *apiError) {
	a := m.applyments[rt.param]
	if a == nil && rt.applymentID == 0 && digitsOnly.MatchString(rt.param) {
		id, _ := strconv.ParseInt(rt.param, 10, 64)
		a = m.applymentIDs[id]
	}
	if a == nil && m.auto {
		a = &Applyment{BusinessCode: rt.param, ApplymentID: rt.applymentID}
		if a.ApplymentID == 0 {
			a.ApplymentID, _ = strconv.ParseInt(m.newID(), 10, 64)
		}
		m.applyments[a.BusinessCode] = a
		m.applymentIDs[a.ApplymentID] = a
	}
	switch {
	case a == nil:
		return 0, nil, errorf(http.StatusBadRequest, wxpay.CodeInvalidRequest, "申请单不存在")
	case rt.applymentID != 0 && rt.applymentID != a.ApplymentID:
		return 0, nil, errorf(http.StatusBadRequest, wxpay.CodeInvalidRequest, "business_code与applyment_id不匹配")
	case a.Canceled:
		return 0, nil, errorf(http.StatusBadRequest, wxpay.CodeInvalidRequest, "申请单已撤销")
	}
	a.Canceled = true
	return http.StatusNoContent, nil, nil
}

// applyCancelWithdraw: the sensitive fields must decrypt with the
// simulator's key, named by Wechatpay-Serial; an out_request_no already used
// is 400 ALREADY_EXISTS; an unknown sub-merchant is 403 NO_AUTH, one not
// allowed to cancel 400 INVALID_REQUEST.
func (m *model) applyCancelWithdraw(rt route, body []byte, key *rsa.PrivateKey, keyID string, now time.Time) (int, []byte, *apiError) {
	var req wxpay.ApplyCancelWithdrawRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, paramError("", "body", "请求体不是合法的JSON: %v", err)
	}
	if req.SubMchid == "" {
		return 0, nil, paramError("sub_mchid", "body", "缺少参数sub_mchid")
	}
	if req.OutRequestNo == "" {
		return 0, nil, paramError("out_request_no", "body", "缺少参数out_request_no")
	}
	if req.Withdraw == wxpay.ApplyWithdraw && req.PayeeInfo == nil {
		return 0, nil, paramError("payee_info", "body", "申请提现时payee_info必填")
	}
	payee, aerr := decryptPayee(req.PayeeInfo, key, keyID, rt.serial)
	if aerr != nil {
		return 0, nil, aerr
	}
	mer := m.merchant(req.SubMchid)
	switch {
	case mer == nil:
		return 0, nil, errorf(http.StatusForbidden, wxpay.CodeNoAuth, "该商户不是本平台的二级商户")
	case mer.State != wxpay.MerchantNormal || mer.Result != wxpay.AllowCancelWithdraw:
		return 0, nil, errorf(http.StatusBadRequest, wxpay.CodeInvalidRequest, "该商户当前不可发起注销提现申请")
	}
	if _, dup := m.byOutNo[req.OutRequestNo]; dup {
		return 0, nil, errorf(http.StatusBadRequest, "ALREADY_EXISTS", "out_request_no已存在")
	}
	w := req.Withdraw
	if w == "" {
		w = wxpay.NotApplyWithdraw
	}
	a := &CancelWithdraw{ApplymentID: m.newID(), OutRequestNo: req.OutRequestNo, SubMchid: req.SubMchid,
		State: wxpay.CancelAccepted, Withdraw: w, ModifyTime: now, Payee: payee}
	m.withdrawals[a.ApplymentID] = a
	m.byOutNo[a.OutRequestNo] = a
	return ok(wxpay.ApplyCancelWithdrawResponse{ApplymentID: a.ApplymentID, OutRequestNo: a.OutRequestNo})
}

// decryptPayee decrypts the sensitive fields of a payee (RSAES-OAEP, SHA-1).
func decryptPayee(p *wxpay.PayeeInfo, key *rsa.PrivateKey, keyID, serial string) (*wxpay.PayeeInfo, *apiError) {
	if p == nil {
		return nil, nil
	}
	out := *p
	var fields []*string
	if p.BankAccountInfo != nil {
		b := *p.BankAccountInfo
		out.BankAccountInfo = &b
		fields = append(fields, &b.AccountName, &b.AccountNumber)
	}
	if p.IdentityInfo != nil {
		i := *p.IdentityInfo
		out.IdentityInfo = &i
		fields = append(fields, &i.IdentificationName, &i.IdentificationNo)
	}
	for _, f := range fields {
		if *f == "" {
			continue
		}
		if serial != keyID {
			return nil, &apiError{status: http.StatusBadRequest, code: wxpay.CodeParamError, message: "Wechatpay-Serial与加密所用的公钥不符",
				detail: map[string]any{"field": "Wechatpay-Serial", "location": "header"}}
		}
		ct, err := base64.StdEncoding.DecodeString(*f)
		if err == nil {
			var pt []byte
			if pt, err = rsa.DecryptOAEP(sha1.New(), nil, key, ct, nil); err == nil {
				*f = string(pt)
				continue
			}
		}
		return nil, paramError("payee_info", "body", "敏感信息解密失败")
	}
	return &out, nil
}

// decodeStrict decodes one JSON object, refusing unknown fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

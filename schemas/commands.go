package schemas

import (
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Type is a command type: the last token of a command subject
// (<prefix>.cmd.<type>) and the middle of an outcome event type
// (wxpay.<type>.<outcome>).
type Type string

// The command types (docs/interface.md, Commands).
const (
	// TypeValidateCancel asks whether a sub-merchant may be cancelled
	// (GET …/apply-cancel-withdraw/validate-cancel/{sub_mchid}).
	TypeValidateCancel Type = "validate-cancel"
	// TypeQueryCancelWithdraw looks up a cancel-withdraw application by
	// applyment_id or by out_request_no.
	TypeQueryCancelWithdraw Type = "query-cancel-withdraw"
	// TypeConfirmCancel confirms a cancel-withdraw application on the
	// sub-merchant's behalf (POST …/apply-cancel-withdraw/confirm).
	TypeConfirmCancel Type = "confirm-cancel"
	// TypeQueryCancelApplication looks up an application of the older
	// cancellation flow by out_apply_no.
	TypeQueryCancelApplication Type = "query-cancel-application"
	// TypeCancelApplyment revokes an apply4subject application
	// (POST /v3/apply4subject/applyment/…/cancel; 204 No Content).
	TypeCancelApplyment Type = "cancel-applyment"
	// TypeApplyCancelWithdraw submits a cancel-withdraw application
	// (POST /v3/ecommerce/account/apply-cancel-withdraw).
	TypeApplyCancelWithdraw Type = "apply-cancel-withdraw"
	// TypeTrack queries a cancel-withdraw application or an old-flow cancel
	// application at once and follows it to its end (docs/interface.md,
	// Lifecycle tracking).
	TypeTrack Type = "track"
	// TypeUntrack ends the tracking of a resource; it sends no request.
	TypeUntrack Type = "untrack"
)

var types = []Type{
	TypeValidateCancel,
	TypeQueryCancelWithdraw,
	TypeConfirmCancel,
	TypeQueryCancelApplication,
	TypeCancelApplyment,
	TypeApplyCancelWithdraw,
	TypeTrack,
	TypeUntrack,
}

// Types returns every command type, in the order of docs/interface.md. The slice
// is the caller's to modify.
func Types() []Type { return slices.Clone(types) }

// Known reports whether t is one of [Types].
func (t Type) Known() bool { return slices.Contains(types, t) }

// Command is a decoded and validated command: one of *[ValidateCancel],
// *[QueryCancelWithdraw], *[ConfirmCancel], *[QueryCancelApplication],
// *[CancelApplyment] or *[ApplyCancelWithdraw], as returned by [Parse].
//
// Every command is a [slog.LogValuer] that keeps personal data
// (operator_identification, bank account and identity fields) out of logs.
type Command interface {
	// CommandType is the command's type.
	CommandType() Type
	slog.LogValuer
}

// redacted replaces personal data in logs and in String.
const redacted = "[redacted]"

// secret is the log form of a personal-data field: redacted when set, empty
// when not (so a log still tells whether it was given).
func secret(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// render writes a log value as text, resolving nested LogValuers, as
// {key=value key={…}}.
func render(v slog.Value) string {
	var b strings.Builder
	var walk func(v slog.Value)
	walk = func(v slog.Value) {
		v = v.Resolve()
		if v.Kind() != slog.KindGroup {
			b.WriteString(strconv.Quote(v.String()))
			return
		}
		b.WriteByte('{')
		for i, a := range v.Group() {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(a.Key)
			b.WriteByte('=')
			walk(a.Value)
		}
		b.WriteByte('}')
	}
	walk(v)
	return b.String()
}

// ValidateCancel is the body of a validate-cancel command.
type ValidateCancel struct {
	// SubMchid is the sub-merchant (二级商户号): 1–32 digits. Required.
	SubMchid string `json:"sub_mchid" validate:"required,max=32,identifier,digits"`
}

// CommandType returns [TypeValidateCancel].
func (*ValidateCancel) CommandType() Type { return TypeValidateCancel }

// LogValue returns the command's fields; none is personal data.
func (c ValidateCancel) LogValue() slog.Value {
	return slog.GroupValue(slog.String("sub_mchid", c.SubMchid))
}

// QueryCancelWithdraw is the body of a query-cancel-withdraw command: exactly
// one of ApplymentID and OutRequestNo is given.
type QueryCancelWithdraw struct {
	// ApplymentID is WeChat Pay's application number (微信支付注销单号):
	// 1–32 characters of [A-Za-z0-9_-].
	ApplymentID string `json:"applyment_id,omitempty" validate:"omitempty,max=32,identifier"`
	// OutRequestNo is the platform's own application number (商户注销申请单号):
	// 1–32 characters of [A-Za-z0-9_-].
	OutRequestNo string `json:"out_request_no,omitempty" validate:"omitempty,max=32,identifier"`
}

// CommandType returns [TypeQueryCancelWithdraw].
func (*QueryCancelWithdraw) CommandType() Type { return TypeQueryCancelWithdraw }

// LogValue returns the command's fields; none is personal data.
func (c QueryCancelWithdraw) LogValue() slog.Value {
	return slog.GroupValue(slog.String("applyment_id", c.ApplymentID), slog.String("out_request_no", c.OutRequestNo))
}

// ConfirmCancel is the body of a confirm-cancel command: at least one of
// ApplymentID and OutRequestNo, and every other field, are given.
type ConfirmCancel struct {
	// ApplymentID is WeChat Pay's application number: 1–32 characters of
	// [A-Za-z0-9_-].
	ApplymentID string `json:"applyment_id,omitempty" validate:"omitempty,max=32,identifier"`
	// OutRequestNo is the platform's own application number: 1–32
	// characters of [A-Za-z0-9_-].
	OutRequestNo string `json:"out_request_no,omitempty" validate:"omitempty,max=32,identifier"`
	// SubMchid is the sub-merchant: 1–32 digits. Required.
	SubMchid string `json:"sub_mchid" validate:"required,max=32,identifier,digits"`
	// OperatorIdentification identifies the platform employee who confirmed
	// (平台确认操作人标识): 1–100 letters A-Z a-z, digits and Han characters.
	// Personal data: never logged. Required.
	OperatorIdentification string `json:"operator_identification" validate:"required,max=100,han_alnum"`
	// ConfirmTime is when the merchant ticked the cancellation agreement:
	// an RFC 3339 date-time such as 2015-05-20T13:29:35+08:00, at most 32
	// characters. Required.
	ConfirmTime string `json:"confirm_time" validate:"required,max=32,rfc3339"`
	// CancelContractVersion is the version of the cancellation agreement
	// (注销协议版本号): 1–32 characters without control characters. Required.
	CancelContractVersion string `json:"cancel_contract_version" validate:"required,max=32,no_control"`
}

// CommandType returns [TypeConfirmCancel].
func (*ConfirmCancel) CommandType() Type { return TypeConfirmCancel }

// LogValue returns the command's fields with operator_identification
// redacted.
func (c ConfirmCancel) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("applyment_id", c.ApplymentID),
		slog.String("out_request_no", c.OutRequestNo),
		slog.String("sub_mchid", c.SubMchid),
		slog.String("operator_identification", secret(c.OperatorIdentification)),
		slog.String("confirm_time", c.ConfirmTime),
		slog.String("cancel_contract_version", c.CancelContractVersion),
	)
}

// String renders the command like LogValue does, so that formatting it with
// %v never shows the operator.
func (c ConfirmCancel) String() string { return render(c.LogValue()) }

// QueryCancelApplication is the body of a query-cancel-application command.
type QueryCancelApplication struct {
	// OutApplyNo is the platform's application number of the older
	// cancellation flow (商户注销申请单号): 1–32 characters of [A-Za-z0-9_-].
	// Required.
	OutApplyNo string `json:"out_apply_no" validate:"required,max=32,identifier"`
}

// CommandType returns [TypeQueryCancelApplication].
func (*QueryCancelApplication) CommandType() Type { return TypeQueryCancelApplication }

// LogValue returns the command's fields; none is personal data.
func (c QueryCancelApplication) LogValue() slog.Value {
	return slog.GroupValue(slog.String("out_apply_no", c.OutApplyNo))
}

// CancelApplyment is the body of a cancel-applyment command: at least one of
// BusinessCode and ApplymentID is given.
type CancelApplyment struct {
	// BusinessCode is the platform's business application number
	// (业务申请编号): 1–128 characters of [A-Za-z0-9_-]. Empty: not given.
	BusinessCode string `json:"business_code,omitempty" validate:"omitempty,max=128,identifier"`
	// ApplymentID is WeChat Pay's application number (申请单编号), a JSON
	// integer from 1 to 2^63-1. Zero: not given.
	ApplymentID int64 `json:"applyment_id,omitempty" validate:"omitempty,min=1"`
}

// CommandType returns [TypeCancelApplyment].
func (*CancelApplyment) CommandType() Type { return TypeCancelApplyment }

// LogValue returns the command's fields; none is personal data.
func (c CancelApplyment) LogValue() slog.Value {
	return slog.GroupValue(slog.String("business_code", c.BusinessCode), slog.Int64("applyment_id", c.ApplymentID))
}

// Withdraw says whether the sub-merchant's remaining funds are withdrawn
// (是否提取资金).
type Withdraw string

// The withdraw choices.
const (
	// NotApplyWithdraw: cancel only (仅注销,不申请提现).
	NotApplyWithdraw Withdraw = "NOT_APPLY_WITHDRAW"
	// ApplyWithdraw: cancel and withdraw the balance to the payee's bank
	// account (申请提现); payee_info is then required.
	ApplyWithdraw Withdraw = "APPLY_WITHDRAW"
)

// AccountType is the kind of the payee's bank account.
type AccountType string

// The payee account types.
const (
	// AccountCorporate is a corporate account (对公账户).
	AccountCorporate AccountType = "ACCOUNT_TYPE_CORPORATE"
	// AccountPersonal is a personal account (对私账户).
	AccountPersonal AccountType = "ACCOUNT_TYPE_PERSONAL"
)

// ApplyCancelWithdraw is the body of an apply-cancel-withdraw command. The
// bank account and identity fields are sent in plain text on the command
// subject; the service encrypts them for WeChat Pay.
//
// The lengths that WeChat Pay's documentation of the endpoint does not give are the service's own:
// the fields that are encrypted (account_name, account_number,
// identification_name, identification_no) are at most 50 characters, so
// that even 50 four-byte characters (200 bytes) fit the 214-byte plain-text
// limit of RSAES-OAEP (SHA-1) with WeChat Pay's 2048-bit key; other bank
// fields at most 128 (bank_branch_id 64); media ids 512 (as media ids of the
// upload API elsewhere); at most 20 proof media and 20 additional materials;
// remark at most 256 characters.
type ApplyCancelWithdraw struct {
	// SubMchid is the sub-merchant: 1–32 digits. Required.
	SubMchid string `json:"sub_mchid" validate:"required,max=32,identifier,digits"`
	// OutRequestNo is the platform's application number, unique per
	// platform: 1–32 letters and digits (WeChat Pay: 必须仅包含大小写字母与数字,
	// https://pay.weixin.qq.com/doc/v3/partner/4013892756). Required.
	OutRequestNo string `json:"out_request_no" validate:"required,max=32,identifier,alnum"`
	// Withdraw is NOT_APPLY_WITHDRAW or APPLY_WITHDRAW; empty: not given.
	Withdraw Withdraw `json:"withdraw,omitempty" validate:"omitempty,oneof=NOT_APPLY_WITHDRAW APPLY_WITHDRAW"`
	// PayeeInfo is where withdrawn funds go; required when Withdraw is
	// APPLY_WITHDRAW.
	PayeeInfo *PayeeInfo `json:"payee_info,omitempty" validate:"required_if=Withdraw APPLY_WITHDRAW"`
	// ProofMedias are proof documents (media ids of the upload API), at
	// most 20.
	ProofMedias []ProofMedia `json:"proof_medias,omitempty" validate:"omitempty,max=20,dive"`
	// AdditionalMaterials are further media ids, at most 20, each 1–512
	// characters without control characters.
	AdditionalMaterials []string `json:"additional_materials,omitempty" validate:"omitempty,max=20,dive,required,max=512,no_control"`
	// Remark is a free-text remark, at most 256 characters without control
	// characters.
	Remark string `json:"remark,omitempty" validate:"omitempty,max=256,no_control"`
}

// CommandType returns [TypeApplyCancelWithdraw].
func (*ApplyCancelWithdraw) CommandType() Type { return TypeApplyCancelWithdraw }

// LogValue returns the command's fields with every bank account and
// identity field redacted.
func (c ApplyCancelWithdraw) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("sub_mchid", c.SubMchid),
		slog.String("out_request_no", c.OutRequestNo),
		slog.String("withdraw", string(c.Withdraw)),
	}
	if c.PayeeInfo != nil {
		attrs = append(attrs, slog.Any("payee_info", *c.PayeeInfo))
	}
	if len(c.ProofMedias) > 0 {
		attrs = append(attrs, slog.Int("proof_medias", len(c.ProofMedias)))
	}
	if len(c.AdditionalMaterials) > 0 {
		attrs = append(attrs, slog.Int("additional_materials", len(c.AdditionalMaterials)))
	}
	attrs = append(attrs, slog.String("remark", c.Remark))
	return slog.GroupValue(attrs...)
}

// String renders the command like LogValue does, so that formatting it with
// %v never shows bank or identity data.
func (c ApplyCancelWithdraw) String() string { return render(c.LogValue()) }

// PayeeInfo is the payee of withdrawn funds (提现收款信息).
type PayeeInfo struct {
	// AccountType is ACCOUNT_TYPE_CORPORATE or ACCOUNT_TYPE_PERSONAL.
	// Required.
	AccountType AccountType `json:"account_type" validate:"required,oneof=ACCOUNT_TYPE_CORPORATE ACCOUNT_TYPE_PERSONAL"`
	// BankAccountInfo is the account funds are paid to. Required: a
	// withdrawal without an account cannot be paid.
	BankAccountInfo *BankAccountInfo `json:"bank_account_info" validate:"required"`
	// IdentityInfo identifies the account holder; optional.
	IdentityInfo *IdentityInfo `json:"identity_info,omitempty"`
}

// LogValue returns the account type; the account and the identity are
// redacted.
func (p PayeeInfo) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("account_type", string(p.AccountType))}
	if p.BankAccountInfo != nil {
		attrs = append(attrs, slog.Any("bank_account_info", *p.BankAccountInfo))
	}
	if p.IdentityInfo != nil {
		attrs = append(attrs, slog.Any("identity_info", *p.IdentityInfo))
	}
	return slog.GroupValue(attrs...)
}

// String renders the payee like LogValue does.
func (p PayeeInfo) String() string { return render(p.LogValue()) }

// BankAccountInfo is the payee's bank account. AccountName and AccountNumber
// are encrypted by the service before they are sent to WeChat Pay; every
// field is redacted in logs.
type BankAccountInfo struct {
	// AccountName is the account holder's name (开户名称), 1–50 characters.
	// Required.
	AccountName string `json:"account_name" validate:"required,max=50,no_control"`
	// AccountBank is the bank (开户银行), at most 128 characters.
	AccountBank string `json:"account_bank,omitempty" validate:"omitempty,max=128,no_control"`
	// BankBranchID is the branch's interbank number (联行号), at most 64
	// characters.
	BankBranchID string `json:"bank_branch_id,omitempty" validate:"omitempty,max=64,no_control"`
	// BankBranchName is the branch's name, at most 128 characters.
	BankBranchName string `json:"bank_branch_name,omitempty" validate:"omitempty,max=128,no_control"`
	// BankName is the bank's full name, at most 128 characters.
	BankName string `json:"bank_name,omitempty" validate:"omitempty,max=128,no_control"`
	// AccountNumber is the account number (银行账号), 1–50 characters.
	// Required.
	AccountNumber string `json:"account_number" validate:"required,max=50,no_control"`
}

// LogValue redacts every field that is set.
func (b BankAccountInfo) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("account_name", secret(b.AccountName)),
		slog.String("account_bank", secret(b.AccountBank)),
		slog.String("bank_branch_id", secret(b.BankBranchID)),
		slog.String("bank_branch_name", secret(b.BankBranchName)),
		slog.String("bank_name", secret(b.BankName)),
		slog.String("account_number", secret(b.AccountNumber)),
	)
}

// String renders the account like LogValue does.
func (b BankAccountInfo) String() string { return render(b.LogValue()) }

// IdentityInfo identifies the payee. IdentificationName and
// IdentificationNo are encrypted by the service before they are sent; every
// field is redacted in logs.
type IdentityInfo struct {
	// IDDocType is the kind of identity document, at most 64 characters.
	IDDocType string `json:"id_doc_type,omitempty" validate:"omitempty,max=64,no_control"`
	// IdentificationName is the holder's name, at most 50 characters.
	IdentificationName string `json:"identification_name,omitempty" validate:"omitempty,max=50,no_control"`
	// IdentificationNo is the document number, at most 50 characters.
	IdentificationNo string `json:"identification_no,omitempty" validate:"omitempty,max=50,no_control"`
}

// LogValue redacts every field that is set.
func (i IdentityInfo) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id_doc_type", secret(i.IDDocType)),
		slog.String("identification_name", secret(i.IdentificationName)),
		slog.String("identification_no", secret(i.IdentificationNo)),
	)
}

// String renders the identity like LogValue does.
func (i IdentityInfo) String() string { return render(i.LogValue()) }

// ProofMedia is one proof document.
type ProofMedia struct {
	// ProofMediaType is the kind of proof, 1–64 characters. Required.
	ProofMediaType string `json:"proof_media_type" validate:"required,max=64,no_control"`
	// ProofMedia is the media id from the upload API, 1–512 characters.
	// Required.
	ProofMedia string `json:"proof_media" validate:"required,max=512,no_control"`
}

// Track is the body of a track command: exactly one of ApplymentID (a
// cancel-withdraw application) and OutApplyNo (an old-flow cancel
// application) is given.
type Track struct {
	// ApplymentID is WeChat Pay's number of a cancel-withdraw application:
	// 1–32 characters of [A-Za-z0-9_-].
	ApplymentID string `json:"applyment_id,omitempty" validate:"omitempty,max=32,identifier"`
	// OutApplyNo is the platform's number of an old-flow cancel
	// application: 1–32 characters of [A-Za-z0-9_-].
	OutApplyNo string `json:"out_apply_no,omitempty" validate:"omitempty,max=32,identifier"`
}

// CommandType returns [TypeTrack].
func (*Track) CommandType() Type { return TypeTrack }

// Target returns the resource the command names and its key.
func (c Track) Target() (Resource, string) { return target(c.ApplymentID, c.OutApplyNo) }

// LogValue returns the command's fields; none is personal data.
func (c Track) LogValue() slog.Value { return targetLog(c.ApplymentID, c.OutApplyNo) }

// Untrack is the body of an untrack command, named as for [Track].
type Untrack Track

// CommandType returns [TypeUntrack].
func (*Untrack) CommandType() Type { return TypeUntrack }

// Target returns the resource the command names and its key.
func (c Untrack) Target() (Resource, string) { return target(c.ApplymentID, c.OutApplyNo) }

// LogValue returns the command's fields; none is personal data.
func (c Untrack) LogValue() slog.Value { return targetLog(c.ApplymentID, c.OutApplyNo) }

func target(applymentID, outApplyNo string) (Resource, string) {
	if applymentID != "" {
		return ResourceCancelWithdraw, applymentID
	}
	return ResourceCancelApplication, outApplyNo
}

func targetLog(applymentID, outApplyNo string) slog.Value {
	return slog.GroupValue(slog.String("applyment_id", applymentID), slog.String("out_apply_no", outApplyNo))
}

// commandIDPattern is the charset and length of a command id (docs/interface.md, Commands).
var commandIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// CommandIDRule describes a valid command id, for error messages.
const CommandIDRule = "1-128 characters of [A-Za-z0-9_.:-]"

// ValidCommandID reports whether id may be a command id (the Nats-Msg-Id
// of a command).
func ValidCommandID(id string) bool { return commandIDPattern.MatchString(id) }

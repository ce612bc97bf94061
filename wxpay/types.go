package wxpay

import "log/slog"

// Field values of the merchant-cancellation endpoints. Enumerations are typed
// strings; a value WeChat Pay adds later decodes as is and is passed through,
// never refused.

// MerchantState is the state of a sub-merchant (merchant_state).
type MerchantState string

// Merchant states.
const (
	MerchantNormal           MerchantState = "NORMAL"
	MerchantHasBeenCancelled MerchantState = "HAS_BEEN_CANCELLED"
)

// ValidateResult says whether a cancellation may be applied for (validate_result).
type ValidateResult string

// Validation results.
const (
	AllowCancelWithdraw    ValidateResult = "ALLOW_CANCEL_WITHDRAW"
	NotAllowCancelWithdraw ValidateResult = "NOT_ALLOW_CANCEL_WITHDRAW"
)

// OutAccountType is a sub-merchant account type (out_account_type).
type OutAccountType string

// Account types.
const (
	BasicAccount    OutAccountType = "BASIC_ACCOUNT"
	OperateAccount  OutAccountType = "OPERATE_ACCOUNT"
	MarginAccount   OutAccountType = "MARGIN_ACCOUNT"
	TradeFeeAccount OutAccountType = "TRADE_FEE_ACCOUNT"
)

// BlockReasonType says why a merchant may not cancel (block_reasons[].type).
type BlockReasonType string

// Block reasons.
const (
	BlockConsumerComplaintUnprocessed BlockReasonType = "CONSUMER_COMPLAINT_UNPROCESSED"
	BlockHasBlockingControl           BlockReasonType = "HAS_BLOCKING_CONTROL"
	BlockFundsPendingProcessing       BlockReasonType = "FUNDS_PENDING_PROCESSING"
	BlockOtherReason                  BlockReasonType = "OTHER_REASON"
)

// CancelState is the state of a cancel-withdraw application (cancel_state):
// ACCEPTED → REVIEWING → (REJECTED | WAITING_MERCHANT_CONFIRM) →
// SYSTEM_PROCESSING → CANCELED → FUND_PROCESSING → FINISH, or REVOKED when an
// approved application is not confirmed within 30 days.
type CancelState string

// Cancel-withdraw application states.
const (
	CancelAccepted               CancelState = "ACCEPTED"
	CancelReviewing              CancelState = "REVIEWING"
	CancelRejected               CancelState = "REJECTED"
	CancelWaitingMerchantConfirm CancelState = "WAITING_MERCHANT_CONFIRM"
	CancelRevoked                CancelState = "REVOKED"
	CancelSystemProcessing       CancelState = "SYSTEM_PROCESSING"
	CancelCanceled               CancelState = "CANCELED"
	CancelFundProcessing         CancelState = "FUND_PROCESSING"
	CancelFinish                 CancelState = "FINISH"
)

// Confirmed reports whether an application in state s has been confirmed by
// the merchant or platform: SYSTEM_PROCESSING, CANCELED, FUND_PROCESSING or
// FINISH.
func (s CancelState) Confirmed() bool {
	switch s {
	case CancelSystemProcessing, CancelCanceled, CancelFundProcessing, CancelFinish:
		return true
	}
	return false
}

// WithdrawChoice says whether funds are withdrawn on cancellation (withdraw).
type WithdrawChoice string

// Withdraw choices.
const (
	NotApplyWithdraw WithdrawChoice = "NOT_APPLY_WITHDRAW"
	ApplyWithdraw    WithdrawChoice = "APPLY_WITHDRAW"
)

// WithdrawState is the progress of the withdrawal (withdraw_state).
type WithdrawState string

// Withdraw states.
const (
	WithdrawProcessing WithdrawState = "WITHDRAW_PROCESSING"
	WithdrawException  WithdrawState = "WITHDRAW_EXCEPTION"
	WithdrawSucceed    WithdrawState = "WITHDRAW_SUCCEED"
)

// PayState is the state of one account's payout (account_withdraw_result[].pay_state).
type PayState string

// Pay states.
const (
	PayProcessing   PayState = "PAY_PROCESSING"
	PaySucceed      PayState = "PAY_SUCCEED"
	PayFail         PayState = "PAY_FAIL"
	PayBankRefunded PayState = "BANK_REFUNDED"
)

// ApplicationState is the state of an old-flow cancel application
// (cancel-applications, cancel_state).
type ApplicationState string

// Old-flow cancel application states.
const (
	ApplicationReviewing     ApplicationState = "REVIEWING"
	ApplicationRejected      ApplicationState = "REJECTED"
	ApplicationCancelSuccess ApplicationState = "CANCEL_SUCCESS"
)

// AccountType is the payee account type (payee_info.account_type).
type AccountType string

// Payee account types.
const (
	AccountCorporate AccountType = "ACCOUNT_TYPE_CORPORATE"
	AccountPersonal  AccountType = "ACCOUNT_TYPE_PERSONAL"
)

// AccountInfo is the balance of one sub-merchant account, in fen.
type AccountInfo struct {
	OutAccountType OutAccountType `json:"out_account_type"`
	Amount         int64          `json:"amount"`
}

// BlockReason is one reason a merchant may not cancel.
type BlockReason struct {
	Type        BlockReasonType `json:"type,omitempty"`
	Description string          `json:"description,omitempty"`
}

// ValidateCancelResponse answers GET …/validate-cancel/{sub_mchid}.
type ValidateCancelResponse struct {
	SubMchid       string         `json:"sub_mchid"`
	MerchantState  MerchantState  `json:"merchant_state"`
	ValidateResult ValidateResult `json:"validate_result"`
	AccountInfo    []AccountInfo  `json:"account_info,omitempty"`
	BlockReasons   []BlockReason  `json:"block_reasons,omitempty"`
}

// AccountWithdrawResult is the payout of one account.
type AccountWithdrawResult struct {
	OutAccountType   OutAccountType `json:"out_account_type"`
	PayState         PayState       `json:"pay_state"`
	StateDescription string         `json:"state_description"`
}

// CancelWithdrawApplication answers both queries of a cancel-withdraw
// application (by applyment_id and by out_request_no).
type CancelWithdrawApplication struct {
	ApplymentID              string                  `json:"applyment_id,omitempty"`
	OutRequestNo             string                  `json:"out_request_no,omitempty"`
	CancelState              CancelState             `json:"cancel_state,omitempty"`
	CancelStateDescription   string                  `json:"cancel_state_description,omitempty"`
	Withdraw                 WithdrawChoice          `json:"withdraw,omitempty"`
	WithdrawState            WithdrawState           `json:"withdraw_state,omitempty"`
	WithdrawStateDescription string                  `json:"withdraw_state_description,omitempty"`
	AccountWithdrawResult    []AccountWithdrawResult `json:"account_withdraw_result,omitempty"`
	ModifyTime               string                  `json:"modify_time,omitempty"` // RFC 3339
	SubMchid                 string                  `json:"sub_mchid,omitempty"`
	AccountInfo              []AccountInfo           `json:"account_info,omitempty"`
}

// ConfirmCancelRequest is the body of POST …/apply-cancel-withdraw/confirm.
// ApplymentID and OutRequestNo: at least one.
type ConfirmCancelRequest struct {
	ApplymentID            string `json:"applyment_id,omitempty"`
	OutRequestNo           string `json:"out_request_no,omitempty"`
	SubMchid               string `json:"sub_mchid"`
	OperatorIdentification string `json:"operator_identification"`
	ConfirmTime            string `json:"confirm_time"` // RFC 3339
	CancelContractVersion  string `json:"cancel_contract_version"`
}

// LogValue keeps operator_identification, which identifies a person, out of logs.
func (r ConfirmCancelRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("applyment_id", r.ApplymentID),
		slog.String("out_request_no", r.OutRequestNo),
		slog.String("sub_mchid", r.SubMchid),
		slog.String("operator_identification", redacted),
		slog.String("confirm_time", r.ConfirmTime),
		slog.String("cancel_contract_version", r.CancelContractVersion),
	)
}

// ConfirmCancelResponse answers a confirmation.
type ConfirmCancelResponse struct {
	ApplymentID  string `json:"applyment_id,omitempty"`
	SubMchid     string `json:"sub_mchid,omitempty"`
	OutRequestNo string `json:"out_request_no,omitempty"`
}

// CancelApplication answers GET …/cancel-applications/out-apply-no/{out_apply_no}
// (the old cancellation flow).
type CancelApplication struct {
	OutApplyNo   string           `json:"out_apply_no,omitempty"`
	SubMchid     string           `json:"sub_mchid,omitempty"`
	RejectReason string           `json:"reject_reason,omitempty"`
	CancelState  ApplicationState `json:"cancel_state,omitempty"`
	UpdateTime   string           `json:"update_time,omitempty"` // RFC 3339
}

// CancelApplymentRequest names the apply4subject application to cancel: by
// BusinessCode (with ApplymentID as a query parameter when both are set), or
// by ApplymentID alone. At least one must be set.
type CancelApplymentRequest struct {
	BusinessCode string
	ApplymentID  int64 // 0: not set
}

// BankAccountInfo is the payee bank account. AccountName and AccountNumber are
// given in plain text and encrypted by the client before sending.
type BankAccountInfo struct {
	AccountName    string `json:"account_name"`
	AccountBank    string `json:"account_bank,omitempty"`
	BankBranchID   string `json:"bank_branch_id,omitempty"`
	BankBranchName string `json:"bank_branch_name,omitempty"`
	BankName       string `json:"bank_name,omitempty"`
	AccountNumber  string `json:"account_number"`
}

// LogValue keeps the account holder and number out of logs.
func (b BankAccountInfo) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("account_name", redacted),
		slog.String("account_bank", b.AccountBank),
		slog.String("bank_name", b.BankName),
		slog.String("account_number", redacted),
	)
}

// IdentityInfo identifies the payee. IdentificationName and IdentificationNo
// are given in plain text and encrypted by the client before sending.
type IdentityInfo struct {
	IDDocType          string `json:"id_doc_type,omitempty"`
	IdentificationName string `json:"identification_name,omitempty"`
	IdentificationNo   string `json:"identification_no,omitempty"`
}

// LogValue keeps the identity out of logs.
func (i IdentityInfo) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id_doc_type", i.IDDocType), slog.String("identity", redacted))
}

// PayeeInfo is where withdrawn funds go.
type PayeeInfo struct {
	AccountType     AccountType      `json:"account_type"`
	BankAccountInfo *BankAccountInfo `json:"bank_account_info,omitempty"`
	IdentityInfo    *IdentityInfo    `json:"identity_info,omitempty"`
}

// ProofMedia is one proof document (a media id from the upload API).
type ProofMedia struct {
	ProofMediaType string `json:"proof_media_type"`
	ProofMedia     string `json:"proof_media"`
}

// ApplyCancelWithdrawRequest is the body of POST …/apply-cancel-withdraw, with
// its sensitive fields in plain text; the client encrypts them.
type ApplyCancelWithdrawRequest struct {
	SubMchid            string         `json:"sub_mchid"`
	OutRequestNo        string         `json:"out_request_no"`
	Withdraw            WithdrawChoice `json:"withdraw,omitempty"`
	PayeeInfo           *PayeeInfo     `json:"payee_info,omitempty"`
	ProofMedias         []ProofMedia   `json:"proof_medias,omitempty"`
	AdditionalMaterials []string       `json:"additional_materials,omitempty"`
	Remark              string         `json:"remark,omitempty"`
}

// ApplyCancelWithdrawResponse answers a cancel-withdraw application.
type ApplyCancelWithdrawResponse struct {
	ApplymentID  string `json:"applyment_id,omitempty"`
	OutRequestNo string `json:"out_request_no,omitempty"`
}

const redacted = "[redacted]"

package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/schemas"
)

// Personal data of the commands below; none of it may appear in a log line,
// a String or an error.
const (
	secretOperator       = "张三运营01"
	secretAccountName    = "深圳某某科技有限公司"
	secretAccountNumber  = "6222021234567890123"
	secretBankBranchName = "中国工商银行深圳南山支行"
	secretIDName         = "李四"
	secretIDNo           = "110101199001011234"
)

var secrets = []string{secretOperator, secretAccountName, secretAccountNumber, secretBankBranchName, secretIDName, secretIDNo}

func sensitiveCommands(t *testing.T) []schemas.Command {
	t.Helper()
	bodies := map[schemas.Type]string{
		schemas.TypeConfirmCancel: `{"applyment_id":"X1","sub_mchid":"1900000109","operator_identification":"` + secretOperator +
			`","confirm_time":"2015-05-20T13:29:35+08:00","cancel_contract_version":"V20241213"}`,
		schemas.TypeApplyCancelWithdraw: `{"sub_mchid":"1900000109","out_request_no":"P1","withdraw":"APPLY_WITHDRAW",
			"payee_info":{"account_type":"ACCOUNT_TYPE_PERSONAL",
				"bank_account_info":{"account_name":"` + secretAccountName + `","account_number":"` + secretAccountNumber +
			`","bank_branch_name":"` + secretBankBranchName + `"},
				"identity_info":{"id_doc_type":"IDCARD","identification_name":"` + secretIDName + `","identification_no":"` + secretIDNo + `"}},
			"remark":"营业执照已吊销"}`,
	}
	var cmds []schemas.Command
	for typ, body := range bodies {
		cmd, err := schemas.Parse(string(typ), []byte(body))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}

// TestLogValueRedacts logs commands the way the consumer does and checks
// that no personal data reaches the log, while the rest of the command
// does.
func TestLogValueRedacts(t *testing.T) {
	for _, cmd := range sensitiveCommands(t) {
		t.Run(string(cmd.CommandType()), func(t *testing.T) {
			for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
				"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
				"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			} {
				var buf bytes.Buffer
				slog.New(h(&buf)).Info("executing", "command", cmd)
				out := buf.String()
				for _, s := range secrets {
					if strings.Contains(out, s) {
						t.Errorf("%s log line contains %q: %s", name, s, out)
					}
				}
				if !strings.Contains(out, "[redacted]") || !strings.Contains(out, "1900000109") {
					t.Errorf("%s log line lacks the redaction mark or the sub_mchid: %s", name, out)
				}
			}
			for _, format := range []string{"%v", "%+v", "%s"} {
				out := fmt.Sprintf(format, cmd)
				for _, s := range secrets {
					if strings.Contains(out, s) {
						t.Errorf("%s formats %q into %s", format, s, out)
					}
				}
			}
		})
	}
}

// TestLogValueShowsWhatIsGiven: an empty personal field logs as empty, not
// as redacted, so logs still tell what was sent.
func TestLogValueShowsWhatIsGiven(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "account", schemas.BankAccountInfo{AccountName: "a"})
	var line struct {
		Account map[string]string `json:"account"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line.Account["account_name"] != "[redacted]" || line.Account["account_number"] != "" {
		t.Errorf("account logged as %v", line.Account)
	}
}

// TestInvalidErrorsDoNotEchoPersonalData breaks every rule of the
// sensitive fields and checks that the errors name the fields only.
func TestInvalidErrorsDoNotEchoPersonalData(t *testing.T) {
	long := strings.Repeat(secretAccountNumber, 3)
	bodies := map[schemas.Type]string{
		schemas.TypeConfirmCancel: `{"applyment_id":"X1","sub_mchid":"1900000109","operator_identification":"` + secretOperator + `!",
			"confirm_time":"2015-05-20T13:29:35+08:00","cancel_contract_version":"V1"}`,
		schemas.TypeApplyCancelWithdraw: `{"sub_mchid":"1900000109","out_request_no":"P1","payee_info":{"account_type":"` + secretIDNo + `",
			"bank_account_info":{"account_name":"` + secretAccountName + `\u0000","account_number":"` + long + `"},
			"identity_info":{"identification_name":["` + secretIDName + `"],"identification_no":` + secretIDNo + `}}}`,
	}
	for typ, body := range bodies {
		_, err := schemas.Parse(string(typ), []byte(body))
		var inv *schemas.InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("%s: error %v", typ, err)
		}
		if typ == schemas.TypeApplyCancelWithdraw && len(inv.Violations) != 5 {
			t.Errorf("%s: %d violations, want 5: %v", typ, len(inv.Violations), inv.Violations)
		}
		js, _ := json.Marshal(inv.Violations)
		serr := schemas.ValidateCommandJSON(typ, []byte(body))
		if serr == nil {
			t.Errorf("%s: the JSON Schema accepts it", typ)
		}
		for _, out := range []string{err.Error(), string(js), fmt.Sprint(serr)} {
			for _, s := range append(secrets, long) {
				if strings.Contains(out, s) {
					t.Errorf("%s: %q in %s", typ, s, out)
				}
			}
		}
	}
}

func TestUnknownType(t *testing.T) {
	for _, typ := range []string{"", "cancel", "validate-cancel ", "VALIDATE-CANCEL", "wxpay.cmd.validate-cancel", strings.Repeat("x", 300)} {
		cmd, err := schemas.Parse(typ, []byte(`{"sub_mchid":"1900000109"}`))
		if cmd != nil || !errors.Is(err, schemas.ErrUnknownType) {
			t.Errorf("%q: Parse = %v, %v; want ErrUnknownType", typ, cmd, err)
			continue
		}
		var inv *schemas.InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("%q: %T is not an *InvalidError", typ, err)
		}
		want := []schemas.Violation{{Field: "", Rule: schemas.RuleUnknownType}}
		if len(inv.Violations) != 1 || inv.Violations[0].Field != want[0].Field || inv.Violations[0].Rule != want[0].Rule {
			t.Errorf("%q: violations %v", typ, inv.Violations)
		}
		if inv.Type != typ || len(err.Error()) > 400 {
			t.Errorf("%q: Type %q, error of %d bytes: %s", typ, inv.Type, len(err.Error()), err)
		}
		if schemas.Type(typ).Known() {
			t.Errorf("%q is Known", typ)
		}
	}
	// A known type's error matches neither.
	_, err := schemas.Parse(string(schemas.TypeValidateCancel), []byte(`{}`))
	if errors.Is(err, schemas.ErrUnknownType) {
		t.Error("a field error matches ErrUnknownType")
	}
}

func TestTypes(t *testing.T) {
	got := schemas.Types()
	want := []schemas.Type{"validate-cancel", "query-cancel-withdraw", "confirm-cancel", "query-cancel-application", "cancel-applyment", "apply-cancel-withdraw", "track", "untrack"}
	if !slices.Equal(got, want) {
		t.Fatalf("Types() = %v", got)
	}
	got[0] = "changed"
	if schemas.Types()[0] != want[0] {
		t.Error("Types() shares its slice with the caller")
	}
	for _, typ := range want {
		if !typ.Known() {
			t.Errorf("%s is not Known", typ)
		}
	}
}

// TestInvalidErrorMessage checks the one-line summary and the order of the
// violations.
func TestInvalidErrorMessage(t *testing.T) {
	_, err := schemas.Parse("confirm-cancel", []byte(`{"sub_mchid":"x","zz":1,"confirm_time":"now"}`))
	var inv *schemas.InvalidError
	if !errors.As(err, &inv) {
		t.Fatal(err)
	}
	var fields []string
	for _, v := range inv.Violations {
		fields = append(fields, v.Field+"/"+v.Rule)
	}
	want := []string{"/at_least_one_of", "cancel_contract_version/required", "confirm_time/rfc3339",
		"operator_identification/required", "sub_mchid/digits", "zz/unknown_field"}
	if !slices.Equal(fields, want) {
		t.Errorf("violations %v, want %v", fields, want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "invalid confirm-cancel command: ") {
		t.Errorf("Error() = %q", msg)
	}
	for _, v := range inv.Violations {
		if !strings.Contains(msg, v.Message) {
			t.Errorf("Error() lacks %q", v.Message)
		}
	}
	js, err := json.Marshal(inv.Violations[0])
	if err != nil || !strings.HasPrefix(string(js), `{"field":"","rule":"at_least_one_of","message":`) {
		t.Errorf("violation JSON %s (%v)", js, err)
	}
}

// TestParseReturnsTheCommand checks that every field lands where the
// consumer reads it.
func TestParseReturnsTheCommand(t *testing.T) {
	cmd, err := schemas.Parse("apply-cancel-withdraw", []byte(`{"sub_mchid":"1900000109","out_request_no":"P1","withdraw":"APPLY_WITHDRAW",
		"payee_info":{"account_type":"ACCOUNT_TYPE_CORPORATE","bank_account_info":{"account_name":"n","account_bank":"b",
		"bank_branch_id":"402","bank_branch_name":"bn","bank_name":"bk","account_number":"1"},
		"identity_info":{"id_doc_type":"t","identification_name":"in","identification_no":"no"}},
		"proof_medias":[{"proof_media_type":"pt","proof_media":"pm"}],"additional_materials":["a1","a2"],"remark":"r"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &schemas.ApplyCancelWithdraw{
		SubMchid: "1900000109", OutRequestNo: "P1", Withdraw: schemas.ApplyWithdraw,
		PayeeInfo: &schemas.PayeeInfo{AccountType: schemas.AccountCorporate,
			BankAccountInfo: &schemas.BankAccountInfo{AccountName: "n", AccountBank: "b", BankBranchID: "402", BankBranchName: "bn", BankName: "bk", AccountNumber: "1"},
			IdentityInfo:    &schemas.IdentityInfo{IDDocType: "t", IdentificationName: "in", IdentificationNo: "no"}},
		ProofMedias:         []schemas.ProofMedia{{ProofMediaType: "pt", ProofMedia: "pm"}},
		AdditionalMaterials: []string{"a1", "a2"},
		Remark:              "r",
	}
	got, ok := cmd.(*schemas.ApplyCancelWithdraw)
	if !ok {
		t.Fatalf("Parse returned %T", cmd)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) || got.PayeeInfo.BankAccountInfo.AccountNumber != "1" {
		t.Errorf("got %s\nwant %s", gj, wj)
	}

	c, err := schemas.Parse("cancel-applyment", []byte(`{"applyment_id":20000011111}`))
	if err != nil {
		t.Fatal(err)
	}
	if ca := c.(*schemas.CancelApplyment); ca.ApplymentID != 20000011111 || ca.BusinessCode != "" {
		t.Errorf("cancel-applyment = %+v", ca)
	}
}

// TestParseIsSafeForConcurrentUse runs Parse from several goroutines (the
// race detector checks the shared validator and caches).
func TestParseIsSafeForConcurrentUse(t *testing.T) {
	corpus := loadCorpus(t)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for _, e := range corpus {
				if e.Raw != nil {
					_, _ = schemas.Parse(e.Type, []byte(*e.Raw))
				} else if e.Body != nil {
					_, _ = schemas.Parse(e.Type, e.Body)
					_ = schemas.ValidateCommandJSON(schemas.Type(e.Type), e.Body)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

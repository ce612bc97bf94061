package wxpaysim_test

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/wxpay"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

const step = time.Minute

// TestCancelWithdrawProgression moves applications through their states
// with Options.Step on the fake clock, querying through the client.
func TestCancelWithdrawProgression(t *testing.T) {
	t.Parallel()
	type action struct {
		advance time.Duration
		confirm bool // confirm instead of querying; the answer must be 200
		want    wxpay.CancelState
		// For a query: the withdrawal fields and the modification time
		// (minutes after epoch) expected; -1 leaves the time unchecked.
		withdrawState wxpay.WithdrawState
		pay           wxpay.PayState
		modified      int
	}
	q := func(advance time.Duration, want wxpay.CancelState, modified int) action {
		return action{advance: advance, want: want, modified: modified}
	}
	tests := []struct {
		name     string
		step     time.Duration
		result   wxpay.ValidateResult
		withdraw wxpay.WithdrawChoice
		actions  []action
		// merchant state expected from validate-cancel at the end
		merchant wxpay.MerchantState
		// revokeAfter is Options.RevokeAfter (0: WeChat Pay's 30 days)
		revokeAfter time.Duration
	}{
		{"confirmed without withdrawal", step, "", wxpay.NotApplyWithdraw, []action{
			q(0, wxpay.CancelAccepted, 0),
			q(step-time.Second, wxpay.CancelAccepted, 0),
			q(time.Second, wxpay.CancelReviewing, 1),
			q(step, wxpay.CancelWaitingMerchantConfirm, 2),
			q(24*time.Hour, wxpay.CancelWaitingMerchantConfirm, 2),
			{confirm: true, want: wxpay.CancelSystemProcessing},
			q(0, wxpay.CancelSystemProcessing, -1),
			q(step, wxpay.CancelCanceled, -1),
			q(step, wxpay.CancelFinish, -1),
			q(100*step, wxpay.CancelFinish, -1),
		}, wxpay.MerchantHasBeenCancelled, 0},
		{"confirmed with withdrawal", step, "", wxpay.ApplyWithdraw, []action{
			q(2*step, wxpay.CancelWaitingMerchantConfirm, 2),
			{confirm: true, want: wxpay.CancelSystemProcessing},
			q(step, wxpay.CancelCanceled, -1),
			{advance: step, want: wxpay.CancelFundProcessing, withdrawState: wxpay.WithdrawProcessing, pay: wxpay.PayProcessing, modified: -1},
			{advance: step, want: wxpay.CancelFundProcessing, withdrawState: wxpay.WithdrawSucceed, pay: wxpay.PaySucceed, modified: -1},
			{advance: step, want: wxpay.CancelFinish, withdrawState: wxpay.WithdrawSucceed, pay: wxpay.PaySucceed, modified: -1},
		}, wxpay.MerchantHasBeenCancelled, 0},
		{"several steps at once", step, "", wxpay.NotApplyWithdraw, []action{
			q(10*step, wxpay.CancelWaitingMerchantConfirm, 2),
			{confirm: true, want: wxpay.CancelSystemProcessing},
			q(10*step, wxpay.CancelFinish, -1),
		}, wxpay.MerchantHasBeenCancelled, 0},
		{"rejected", step, wxpay.NotAllowCancelWithdraw, wxpay.NotApplyWithdraw, []action{
			q(step, wxpay.CancelReviewing, 1),
			q(step, wxpay.CancelRejected, 2),
			q(100*24*time.Hour, wxpay.CancelRejected, 2),
		}, wxpay.MerchantNormal, 0},
		{"revoked when not confirmed within 30 days", step, "", wxpay.NotApplyWithdraw, []action{
			q(2*step, wxpay.CancelWaitingMerchantConfirm, 2),
			q(30*24*time.Hour-time.Second, wxpay.CancelWaitingMerchantConfirm, 2),
			q(time.Second, wxpay.CancelRevoked, 2+30*24*60),
		}, wxpay.MerchantNormal, 0},
		{"revoked after RevokeAfter when it is set", step, "", wxpay.NotApplyWithdraw, []action{
			q(2*step, wxpay.CancelWaitingMerchantConfirm, 2),
			q(3*step-time.Second, wxpay.CancelWaitingMerchantConfirm, 2),
			q(time.Second, wxpay.CancelRevoked, 5),
		}, wxpay.MerchantNormal, 3 * step},
		{"no step: states change only on confirmation", 0, "", wxpay.NotApplyWithdraw, []action{
			q(365*24*time.Hour, wxpay.CancelAccepted, 0),
		}, wxpay.MerchantNormal, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(o *wxpaysim.Options) {
				o.Step = tc.step
				o.RevokeAfter = tc.revokeAfter
			}, nil)
			ctx := t.Context()
			e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid, Result: tc.result,
				Accounts: []wxpay.AccountInfo{{OutAccountType: wxpay.BasicAccount, Amount: 500}, {OutAccountType: wxpay.OperateAccount, Amount: 0}}})
			applied, _, err := e.client.ApplyCancelWithdraw(ctx, wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: "P1", Withdraw: tc.withdraw,
				PayeeInfo: &wxpay.PayeeInfo{AccountType: wxpay.AccountPersonal, BankAccountInfo: &wxpay.BankAccountInfo{AccountName: "王五", AccountNumber: "6222"}}})
			if tc.result == wxpay.NotAllowCancelWithdraw {
				// A blocked merchant cannot apply; seed the application.
				if !isAPIError(err, 400, "INVALID_REQUEST") {
					t.Fatalf("apply for a blocked merchant: %v", err)
				}
				applied.ApplymentID = e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{OutRequestNo: "P1", SubMchid: subMchid, Withdraw: tc.withdraw}).ApplymentID
			} else if err != nil {
				t.Fatalf("ApplyCancelWithdraw: %v", err)
			}
			for i, a := range tc.actions {
				e.clock.Advance(a.advance)
				if a.confirm {
					if _, _, err := e.client.ConfirmCancel(ctx, confirmRequest(wxpaysim.CancelWithdraw{ApplymentID: applied.ApplymentID, SubMchid: subMchid})); err != nil {
						t.Fatalf("action %d: ConfirmCancel: %v", i, err)
					}
				}
				got, _, err := e.client.QueryCancelWithdrawByApplymentID(ctx, applied.ApplymentID)
				if err != nil {
					t.Fatalf("action %d: query: %v", i, err)
				}
				if got.CancelState != a.want {
					t.Fatalf("action %d (+%v): state %s, want %s", i, a.advance, got.CancelState, a.want)
				}
				if a.modified >= 0 && !a.confirm {
					if want := epoch.Add(time.Duration(a.modified) * step).In(time.FixedZone("CST", 8*3600)).Format(time.RFC3339); got.ModifyTime != want {
						t.Errorf("action %d: modify_time %s, want %s", i, got.ModifyTime, want)
					}
				}
				if got.WithdrawState != a.withdrawState {
					t.Errorf("action %d: withdraw_state %q, want %q", i, got.WithdrawState, a.withdrawState)
				}
				var wantPay []wxpay.AccountWithdrawResult
				if a.pay != "" {
					wantPay = []wxpay.AccountWithdrawResult{{OutAccountType: wxpay.BasicAccount, PayState: a.pay}}
				}
				if !slices.Equal(got.AccountWithdrawResult, wantPay) {
					t.Errorf("action %d: account_withdraw_result %+v, want %+v", i, got.AccountWithdrawResult, wantPay)
				}
				if stored, _ := e.sim.CancelWithdraw(applied.ApplymentID); stored.State != a.want {
					t.Errorf("action %d: CancelWithdraw reports %s", i, stored.State)
				}
			}
			v, _, err := e.client.ValidateCancel(ctx, subMchid)
			if err != nil {
				t.Fatalf("ValidateCancel: %v", err)
			}
			if v.MerchantState != tc.merchant {
				t.Errorf("merchant_state %s, want %s", v.MerchantState, tc.merchant)
			}
			if tc.merchant == wxpay.MerchantHasBeenCancelled && v.ValidateResult != wxpay.NotAllowCancelWithdraw {
				t.Errorf("a cancelled merchant validates %s", v.ValidateResult)
			}
		})
	}
}

// TestConfirmAfterRevocation checks that a revoked application cannot be
// confirmed.
func TestConfirmAfterRevocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *wxpaysim.Options) { o.Step = step }, nil)
	a := e.sim.PutCancelWithdraw(wxpaysim.CancelWithdraw{SubMchid: subMchid, State: wxpay.CancelWaitingMerchantConfirm})
	e.clock.Advance(30 * 24 * time.Hour)
	_, _, err := e.client.ConfirmCancel(t.Context(), confirmRequest(a))
	if !isAPIError(err, 403, "RULE_LIMIT") {
		t.Fatalf("confirming a revoked application: %v, want 403 RULE_LIMIT", err)
	}
	if got, _ := e.sim.CancelWithdraw(a.ApplymentID); got.State != wxpay.CancelRevoked {
		t.Errorf("state %s, want REVOKED", got.State)
	}
}

// TestCancelApplicationProgression covers the old flow: REVIEWING becomes
// CANCEL_SUCCESS after a step; other states stay.
func TestCancelApplicationProgression(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		step    time.Duration
		initial wxpay.ApplicationState
		advance time.Duration
		want    wxpay.ApplicationState
		updated time.Duration
	}{
		{"reviewing before the step", step, wxpay.ApplicationReviewing, step - time.Second, wxpay.ApplicationReviewing, 0},
		{"reviewing after the step", step, wxpay.ApplicationReviewing, 5 * step, wxpay.ApplicationCancelSuccess, step},
		{"rejected stays", step, wxpay.ApplicationRejected, 5 * step, wxpay.ApplicationRejected, 0},
		{"no step", 0, wxpay.ApplicationReviewing, 365 * 24 * time.Hour, wxpay.ApplicationReviewing, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(o *wxpaysim.Options) {
				o.Step = tc.step
			}, nil)
			e.sim.PutCancelApplication(wxpaysim.CancelApplication{OutApplyNo: "OLD1", SubMchid: subMchid, State: tc.initial})
			e.clock.Advance(tc.advance)
			got, _, err := e.client.QueryCancelApplication(t.Context(), "OLD1")
			if err != nil {
				t.Fatalf("QueryCancelApplication: %v", err)
			}
			wantTime := epoch.Add(tc.updated).In(time.FixedZone("CST", 8*3600)).Format(time.RFC3339)
			if got.CancelState != tc.want || got.UpdateTime != wantTime {
				t.Errorf("got %s at %s, want %s at %s", got.CancelState, got.UpdateTime, tc.want, wantTime)
			}
		})
	}
}

// TestAutoCreate checks that with AutoCreate unknown ids succeed on every
// endpoint, and that without it they do not.
func TestAutoCreate(t *testing.T) {
	t.Parallel()
	for _, auto := range []bool{true, false} {
		e := newEnv(t, func(o *wxpaysim.Options) { o.AutoCreate = auto }, nil)
		ctx := t.Context()
		var errs []error
		check := func(name string, err error) {
			if auto && err != nil {
				t.Errorf("AutoCreate: %s: %v", name, err)
			}
			if !auto {
				var apiErr *wxpay.APIError
				if !errors.As(err, &apiErr) || apiErr.StatusCode < 400 || apiErr.StatusCode >= 500 {
					t.Errorf("no AutoCreate: %s: %v, want a business error", name, err)
				}
			}
			errs = append(errs, err)
		}

		v, _, err := e.client.ValidateCancel(ctx, "1900000777")
		check("validate-cancel", err)
		if auto && (v.SubMchid != "1900000777" || v.MerchantState != wxpay.MerchantNormal || v.ValidateResult != wxpay.AllowCancelWithdraw) {
			t.Errorf("auto-created merchant %+v", v)
		}

		q, _, err := e.client.QueryCancelWithdrawByApplymentID(ctx, "2000002000000001")
		check("query by applyment id", err)
		if auto && (q.ApplymentID != "2000002000000001" || q.CancelState != wxpay.CancelWaitingMerchantConfirm) {
			t.Errorf("auto-created application %+v", q)
		}
		q, _, err = e.client.QueryCancelWithdrawByOutRequestNo(ctx, "AUTO1")
		check("query by out_request_no", err)
		if auto && (q.OutRequestNo != "AUTO1" || q.ApplymentID == "" || q.CancelState != wxpay.CancelWaitingMerchantConfirm) {
			t.Errorf("auto-created application %+v", q)
		}

		c, _, err := e.client.ConfirmCancel(ctx, wxpay.ConfirmCancelRequest{OutRequestNo: "AUTO2", SubMchid: "1900000778",
			OperatorIdentification: "op", ConfirmTime: "2026-01-01T08:00:00+08:00", CancelContractVersion: "V1"})
		check("confirm-cancel", err)
		if auto {
			if c.OutRequestNo != "AUTO2" || c.SubMchid != "1900000778" || c.ApplymentID == "" {
				t.Errorf("confirmed %+v", c)
			}
			if a, _ := e.sim.CancelWithdraw(c.ApplymentID); a.State != wxpay.CancelSystemProcessing {
				t.Errorf("auto-created application after confirmation: %s", a.State)
			}
		}

		app, _, err := e.client.QueryCancelApplication(ctx, "AUTOOLD")
		check("query-cancel-application", err)
		if auto && (app.OutApplyNo != "AUTOOLD" || app.CancelState != wxpay.ApplicationReviewing) {
			t.Errorf("auto-created cancel application %+v", app)
		}

		res, err := e.client.CancelApplyment(ctx, wxpay.CancelApplymentRequest{BusinessCode: "AUTOBIZ", ApplymentID: 2000003000000001})
		check("cancel-applyment", err)
		if auto {
			if res.StatusCode != http.StatusNoContent {
				t.Errorf("cancel-applyment: HTTP %d", res.StatusCode)
			}
			if a, ok := e.sim.Applyment("AUTOBIZ"); !ok || !a.Canceled || a.ApplymentID != 2000003000000001 {
				t.Errorf("auto-created applyment %+v", a)
			}
		}

		ap, _, err := e.client.ApplyCancelWithdraw(ctx, wxpay.ApplyCancelWithdrawRequest{SubMchid: "1900000779", OutRequestNo: "AUTO3"})
		check("apply-cancel-withdraw", err)
		if auto && (ap.OutRequestNo != "AUTO3" || ap.ApplymentID == "") {
			t.Errorf("applied %+v", ap)
		}

		if len(errs) != len(wxpaysim.Endpoints())+1 {
			t.Errorf("checked %d calls; every endpoint needs one", len(errs))
		}
	}
}

// TestSeedReproducesIDs checks that a fixed Options.Seed makes generated
// applyment ids reproducible.
func TestSeedReproducesIDs(t *testing.T) {
	t.Parallel()
	ids := func(seed uint64) []string {
		e := newEnv(t, func(o *wxpaysim.Options) { o.Seed = seed }, nil)
		e.sim.PutSubMerchant(wxpaysim.SubMerchant{SubMchid: subMchid})
		var out []string
		for _, no := range []string{"S1", "S2", "S3"} {
			r, _, err := e.client.ApplyCancelWithdraw(t.Context(), wxpay.ApplyCancelWithdrawRequest{SubMchid: subMchid, OutRequestNo: no})
			if err != nil {
				t.Fatalf("ApplyCancelWithdraw: %v", err)
			}
			out = append(out, r.ApplymentID)
		}
		return out
	}
	a, b, c := ids(7), ids(7), ids(8)
	if !slices.Equal(a, b) {
		t.Errorf("seed 7 gave %v then %v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 7 and 8 gave the same ids %v", a)
	}
	if !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != len(a) {
		t.Errorf("ids %v are not distinct and increasing", a)
	}
}

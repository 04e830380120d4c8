package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

// chromium returns the path of a Chromium or Chrome to drive: the one
// EVENTAGG_CHROMIUM names, or the first on PATH. Without one the test fails
// under CI (.ci/run installs Debian's chromium package) and skips elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EVENTAGG_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium on PATH: the status page's browser test needs it under CI (apt-get install chromium, as .ci/run does)")
	}
	t.Skip("no Chromium on PATH (apt-get install chromium, or set EVENTAGG_CHROMIUM): skipping the status page's browser test")
	return ""
}

// newBrowser starts a headless Chromium for the test and returns a context
// of its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.DisableGPU,
		chromedp.WindowSize(1200, 1000),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	return ctx
}

// within runs actions with a deadline, failing the test with what if they
// do not complete in time.
func within(t *testing.T, ctx context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// pageCounters reads the counters the page shows, by id, from the DOM.
const pageCounters = `Object.fromEntries([...document.querySelectorAll("dd[data-value]")].map(e => [e.id, e.textContent.replaceAll(",", "")]))`

// TestStatusPageInBrowser loads the status page of the real server binary
// in headless Chromium: its counters equal GET /stats, hostile topics show
// as text, the counters render without JavaScript too, and an event
// published while the page is open appears in its live tail.
func TestStatusPageInBrowser(t *testing.T) {
	browser := newBrowser(t)
	c := startProgram(t, serverBinary(t), filepath.Join(t.TempDir(), "events.db"))
	client := newClient(t, c.url)
	hostile := `<img src=x onerror=alert(1)><script>alert(2)</script>`
	batch := []eventagg.Event{
		{Topic: "clicks", EventID: "1"}, {Topic: "clicks", EventID: "1"}, // a duplicate
		{Topic: "orders", EventID: "1", Payload: json.RawMessage(`{"n":1}`)},
		{Topic: "orders", EventID: "1", Payload: json.RawMessage(`{"n":2}`)}, // a conflict
	}
	for i := range 40 {
		batch = append(batch, eventagg.Event{Topic: "orders", EventID: strconv.Itoa(i + 2), Payload: json.RawMessage(`{"n":` + strconv.Itoa(i+2) + `}`)})
	}
	// The hostile event last, so that the live tail starts with it.
	batch = append(batch, eventagg.Event{Topic: hostile, EventID: "1", Payload: json.RawMessage(`{"html":"</script><b>bold</b>"}`)})
	if _, err := client.Publish(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var dialogs []string
	if err := chromedp.Listen(browser, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			mu.Lock()
			dialogs = append(dialogs, d.Message)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	within(t, browser, 20*time.Second, "load the page and open the live tail",
		chromedp.Navigate(c.url+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#tail-state[data-state="open"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#tail-rows tr`)))

	got, err := chromedp.Run(browser, chromedp.Evaluate[map[string]string](pageCounters))
	if err != nil {
		t.Fatal(err)
	}
	var st httpapi.StatsResponse
	status, _, body := httpDo(t, "GET", c.url+"/stats", "")
	if err := json.Unmarshal([]byte(body), &st); status != 200 || err != nil {
		t.Fatalf("GET /stats = %d %s", status, body)
	}
	want := map[string]string{
		"received": fmt.Sprint(st.Received), "unique_processed": fmt.Sprint(st.UniqueProcessed),
		"duplicate_dropped": fmt.Sprint(st.DuplicateDropped), "conflicts": fmt.Sprint(st.Conflicts),
		"stored": fmt.Sprint(st.Stored), "expired": fmt.Sprint(st.Expired), "topic_count": fmt.Sprint(st.TopicCount),
	}
	if st.Claims != nil {
		want["claims_active"], want["claims_expired"] = fmt.Sprint(st.Claims.Active), fmt.Sprint(st.Claims.Expired)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the page's counters differ from GET /stats (-stats +page):\n%s", diff)
	}
	if st.Received != 45 || st.Conflicts != 1 || st.DuplicateDropped != 2 {
		t.Errorf("GET /stats = %+v; want 45 received, 2 duplicates of which 1 conflict", st.Counts)
	}

	topics, err := chromedp.Run(browser, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#topics td.name")].map(e => e.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"orders", "clicks", hostile}, topics); diff != "" {
		t.Errorf("the topic table's names (-want +got):\n%s", diff)
	}
	scripts, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.scripts.length + document.images.length`))
	if err != nil || scripts != 1 {
		t.Errorf("the page has %d scripts and images (%v), want its own script only", scripts, err)
	}

	// An event published now appears at the top of the live tail, its
	// payload as text.
	live := "live-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := client.Publish(t.Context(), eventagg.Event{Topic: "live", EventID: live, Payload: json.RawMessage(`{"msg":"<b>hi</b>"}`)}); err != nil {
		t.Fatal(err)
	}
	row := `#tail-rows tr[data-event-id="` + live + `"]`
	within(t, browser, 10*time.Second, "see the new event in the live tail", chromedp.WaitVisible(chromedp.CSS(row)))
	cells, err := chromedp.Run(browser, chromedp.Evaluate[[]string](`[...document.querySelector("#tail-rows tr").cells].map(e => e.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 5 || cells[1] != "live" || cells[2] != live || cells[4] != `{"msg":"<b>hi</b>"}` {
		t.Errorf("the live tail's first row = %q; want the new event, its payload as text", cells)
	}
	tail, err := chromedp.Run(browser, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#tail-rows tr td:nth-child(2)")].map(e => e.textContent)`))
	if err != nil || !strings.Contains(strings.Join(tail, "\n"), hostile) {
		t.Errorf("the live tail's topics = %q (%v); want the hostile topic among them, as text", tail, err)
	}

	// Without JavaScript, the counters are on the page all the same.
	noJS, cancel := chromedp.NewContext(browser)
	defer cancel()
	if _, err := chromedp.Call(noJS, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	within(t, noJS, 10*time.Second, "load the page without JavaScript", chromedp.Navigate(c.url+"/"), chromedp.WaitVisible(chromedp.CSS("#received")))
	received, err := chromedp.Run(noJS, chromedp.Text(chromedp.CSS("#received")))
	if err != nil || received != fmt.Sprint(st.Received+1) {
		t.Errorf("without JavaScript the page shows %q received (%v), want %d", received, err, st.Received+1)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(dialogs) > 0 {
		t.Errorf("the page opened dialogs %q: client data ran as script", dialogs)
	}
}

package controller

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// A listing taken while an operation ran, and read after it ended, does
// not judge the guest: a guest a restart started, listed stopped while it
// was restarted, is not a crash (it was: a third start, refused as the
// guest ran, and an error with a crash counted).
func TestStaleListingIsNotACrash(t *testing.T) {
	e := newHostEnv(t).start(t)
	e.create(t, "web", "h1", nil)
	e.waitState(t, "web", model.StateRunning)
	var once sync.Once
	e.drv.SetListHook(func(doms []hypervisor.Domain) {
		for _, d := range doms {
			if d.Name != "web" || d.State != hypervisor.Shutoff {
				continue
			}
			// Listed between the restart's stop and start: hold the
			// listing until the restart has ended.
			once.Do(func() {
				err := testutil.Poll(5*time.Second, time.Millisecond, func() error {
					e.loop.mu.Lock()
					busy := e.loop.track["web"].busy
					e.loop.mu.Unlock()
					if busy || e.drv.Calls("Start") < 2 {
						return fmt.Errorf("restart under way (%d starts)", e.drv.Calls("Start"))
					}
					return nil
				})
				if err != nil {
					t.Error(err) // the loop's goroutine: no Fatal here
				}
			})
		}
	})
	e.drv.SetStartDelay(100 * time.Millisecond) // listed stopped meanwhile
	e.apply(t, raftlog.RestartVM{Name: "web"})
	testutil.Eventually(t, 5*time.Second, func() error {
		if e.drv.Calls("Start") < 2 {
			return fmt.Errorf("%d starts", e.drv.Calls("Start"))
		}
		return nil
	})
	lists := e.drv.Calls("List")
	testutil.Eventually(t, 5*time.Second, func() error { // a few passes of the loop
		if e.drv.Calls("List") < lists+5 {
			return fmt.Errorf("%d passes", e.drv.Calls("List")-lists)
		}
		return nil
	})
	v := e.waitState(t, "web", model.StateRunning)
	if n := e.drv.Calls("Start"); n != 2 || v.Actual.Restarts != 0 {
		t.Fatalf("%d starts, %d restarts counted: the stale listing passed for a crash", n, v.Actual.Restarts)
	}
}

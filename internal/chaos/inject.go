package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/corralhq/corral/internal/lab"
)

// injection is what one schedule has done to the lab, so that healAll can
// undo whatever a step's own heal did not.
type injection struct {
	r   *Runner
	res *Result
	// hosts (by name) per undo
	off, stopped, cut, lossy, netem, full, drained map[string]bool
}

func (in *injection) mark(m *map[string]bool, h string, on bool) {
	if *m == nil {
		*m = map[string]bool{}
	}
	if on {
		(*m)[h] = true
	} else {
		delete(*m, h)
	}
}

func (in *injection) host(i int) *lab.Host { return in.r.cfg.Lab.Hosts[i%len(in.r.cfg.Lab.Hosts)] }

// others are the lab's hosts but those in skip.
func (in *injection) others(skip []*lab.Host) []*lab.Host {
	var out []*lab.Host
	for _, h := range in.r.cfg.Lab.Hosts {
		keep := true
		for _, s := range skip {
			keep = keep && s != h
		}
		if keep {
			out = append(out, h)
		}
	}
	return out
}

func (in *injection) kill(ctx context.Context, h *lab.Host) error {
	in.mark(&in.off, h.Name, true)
	return h.Kill(ctx)
}

func (in *injection) boot(ctx context.Context, h *lab.Host) error {
	if !in.off[h.Name] {
		return nil
	}
	if err := h.Boot(ctx); err != nil {
		return err
	}
	in.mark(&in.off, h.Name, false)
	in.mark(&in.stopped, h.Name, false)
	return nil
}

// fault returns how to inject st and how to heal it (nil for instant
// faults).
func (in *injection) fault(st Step) (do, undo func(context.Context) error) {
	var hs []*lab.Host
	for _, i := range st.Hosts {
		hs = append(hs, in.host(i))
	}
	var h *lab.Host
	if len(hs) > 0 {
		h = hs[0]
	}
	switch st.Kind {
	case Kill:
		return func(ctx context.Context) error { return in.kill(ctx, h) },
			func(ctx context.Context) error { return in.boot(ctx, h) }
	case Partition, Blip:
		return func(ctx context.Context) error { in.mark(&in.cut, h.Name, true); return h.Partition(ctx) },
			func(ctx context.Context) error {
				if in.off[h.Name] {
					return nil
				}
				in.mark(&in.cut, h.Name, false)
				return h.Heal(ctx)
			}
	case Split:
		rest := in.others(hs)
		return func(ctx context.Context) error {
				var errs []error
				for _, x := range hs {
					in.mark(&in.cut, x.Name, true)
					errs = append(errs, x.Cut(ctx, rest, lab.Both))
				}
				return errors.Join(errs...)
			}, func(ctx context.Context) error {
				var errs []error
				for _, x := range hs {
					in.mark(&in.cut, x.Name, false)
					errs = append(errs, x.Uncut(ctx))
				}
				return errors.Join(errs...)
			}
	case Asymmetric:
		return func(ctx context.Context) error {
				in.mark(&in.cut, h.Name, true)
				return h.Cut(ctx, in.others(hs), lab.Inbound)
			}, func(ctx context.Context) error {
				in.mark(&in.cut, h.Name, false)
				return h.Uncut(ctx)
			}
	case Netem:
		return func(ctx context.Context) error {
				err := h.Netem(ctx, st.Loss, st.Delay, st.Delay/4)
				if errors.Is(err, lab.ErrNoNetem) {
					// No netem in this kernel: the loss with nftables,
					// the latency through NFQUEUE (lab.Host.Delay).
					in.mark(&in.lossy, h.Name, true)
					err := h.Loss(ctx, max(int(st.Loss), 1))
					if st.Delay > 0 {
						err = errors.Join(err, h.Delay(ctx, st.Delay, st.Delay/4))
					}
					return err
				}
				in.mark(&in.netem, h.Name, true)
				return err
			}, func(ctx context.Context) error {
				in.mark(&in.lossy, h.Name, false)
				in.mark(&in.netem, h.Name, false)
				return errors.Join(h.ClearLoss(ctx), h.ClearDelay(ctx), h.ClearNetem(ctx))
			}
	case Libvirtd:
		return func(ctx context.Context) error { return h.RestartDaemon(ctx, "libvirtd") }, nil
	case SIGKILL, SIGTERM:
		return func(ctx context.Context) error {
				in.mark(&in.stopped, h.Name, true)
				return h.StopDaemon(ctx, "corrald", st.Kind == SIGKILL)
			}, func(ctx context.Context) error {
				if in.off[h.Name] || !in.stopped[h.Name] {
					return nil
				}
				in.mark(&in.stopped, h.Name, false)
				return h.StartDaemon(ctx, "corrald")
			}
	case LeaderKill:
		var second *lab.Host
		return func(ctx context.Context) error {
				if err := in.kill(ctx, h); err != nil {
					return err
				}
				if err := lab.Pause(ctx, st.Delay); err != nil {
					return err
				}
				c, err := in.r.admin.Leader(ctx)
				if err != nil {
					return fmt.Errorf("then the leader: %w", err)
				}
				s, err := c.Status(ctx)
				if err != nil {
					return fmt.Errorf("then the leader: %w", err)
				}
				second, err = in.r.cfg.Lab.Host(s.Leader)
				if err != nil {
					return fmt.Errorf("then the leader %q: %w", s.Leader, err)
				}
				in.note("leader-kill: killed %s, then the leader %s %v later", h.Name, second.Name, st.Delay)
				return in.kill(ctx, second)
			}, func(ctx context.Context) error {
				err := in.boot(ctx, h)
				if second != nil {
					err = errors.Join(err, in.boot(ctx, second))
				}
				return err
			}
	case DiskFull:
		return func(ctx context.Context) error { in.mark(&in.full, h.Name, true); return h.FillDataDir() },
			func(ctx context.Context) error { in.mark(&in.full, h.Name, false); return h.FreeDataDir() }
	case Drain:
		return func(ctx context.Context) error {
				c, err := in.r.admin.Leader(ctx)
				if err != nil {
					return err
				}
				in.mark(&in.drained, h.Name, true)
				_, err = c.DrainHost(ctx, h.Name)
				return err
			}, func(ctx context.Context) error {
				return in.restore(ctx, h.Name)
			}
	case Migrate:
		return func(ctx context.Context) error {
			c, err := in.r.admin.Leader(ctx)
			if err != nil {
				return err
			}
			if len(in.r.guests) == 0 {
				return nil
			}
			_, err = c.MigrateVM(ctx, in.r.guests[st.Guest%len(in.r.guests)], "")
			return err
		}, nil
	}
	return func(context.Context) error { return fmt.Errorf("unknown fault %q", st.Kind) }, nil
}

// restore returns a drained host to service once its drain is over (a
// restore during a drain is refused: try for a while).
func (in *injection) restore(ctx context.Context, name string) error {
	if !in.drained[name] {
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := in.r.admin.Leader(ctx)
		if err == nil {
			hs, herr := c.Host(ctx, name)
			switch {
			case herr == nil && hs.Mode == "active" && !hs.Draining:
				in.mark(&in.drained, name, false)
				return nil
			case herr == nil && hs.Mode == "maintenance" && !hs.Draining:
				if _, err = c.RestoreHost(ctx, name, false); err == nil {
					in.mark(&in.drained, name, false)
					return nil
				}
			case herr != nil:
				err = herr
			default:
				err = fmt.Errorf("%s is %s (draining %v)", name, hs.Mode, hs.Draining)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		if err := lab.Pause(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (in *injection) note(format string, args ...any) {
	in.res.Notes = append(in.res.Notes, fmt.Sprintf(format, args...))
}

// healAll undoes whatever is still injected: hosts off boot, corrald
// starts, cuts, loss and netem go, data dirs are freed, drained hosts
// return to service.
func (in *injection) healAll(ctx context.Context) error {
	var errs []error
	for _, h := range in.r.cfg.Lab.Hosts {
		if in.off[h.Name] {
			errs = append(errs, in.boot(ctx, h))
		}
		if in.stopped[h.Name] {
			in.mark(&in.stopped, h.Name, false)
			errs = append(errs, h.StartDaemon(ctx, "corrald"))
		}
		if in.cut[h.Name] {
			in.mark(&in.cut, h.Name, false)
			errs = append(errs, h.Heal(ctx), h.Uncut(ctx))
		}
		if in.lossy[h.Name] || in.netem[h.Name] {
			in.mark(&in.lossy, h.Name, false)
			in.mark(&in.netem, h.Name, false)
			errs = append(errs, h.ClearLoss(ctx), h.ClearDelay(ctx), h.ClearNetem(ctx))
		}
		if in.full[h.Name] {
			in.mark(&in.full, h.Name, false)
			errs = append(errs, h.FreeDataDir())
		}
	}
	for name := range in.drained {
		errs = append(errs, in.restore(ctx, name))
	}
	return errors.Join(errs...)
}

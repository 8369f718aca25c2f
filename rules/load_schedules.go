package rules

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// schedules reads `schedules`.
func (l *loader) schedules(n *yaml.Node) {
	es, _ := l.entries(n, "schedules")
	for _, e := range es {
		key := joinKey("schedules", e.name)
		fs, _ := l.entries(e.val, key, "days", "hours", "tz")
		sc := &schedule{loc: time.UTC}
		sc.days, _ = parseDays("")
		sc.spans, _ = parseHours("")
		good := true
		for _, f := range fs {
			fk := joinKey(key, f.name)
			v, ok := l.str(f.val, fk)
			if !ok {
				good = false
				continue
			}
			var err error
			switch f.name {
			case "days":
				sc.days, err = parseDays(v)
			case "hours":
				sc.spans, err = parseHours(v)
			case "tz":
				sc.loc, err = time.LoadLocation(v)
				if err == nil && v == "" {
					err = fmt.Errorf("empty time zone")
				}
			}
			if err != nil {
				l.errorf(f.val, fk, "%v", err)
				good = false
			}
		}
		if good {
			l.set.schedules[e.name] = sc
		}
	}
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// parseDays reads "mon-fri", "mon,wed,fri", "fri-mon" (wraps), "daily".
func parseDays(s string) ([7]bool, error) {
	var out [7]bool
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "daily" || s == "*" || s == "" {
		for i := range out {
			out[i] = true
		}
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		from, to, isRange := strings.Cut(part, "-")
		a, ok := dayNames[strings.TrimSpace(from)]
		if !ok {
			return out, fmt.Errorf("unknown day %q (use sun, mon, tue, wed, thu, fri, sat)", from)
		}
		if !isRange {
			out[a] = true
			continue
		}
		b, ok := dayNames[strings.TrimSpace(to)]
		if !ok {
			return out, fmt.Errorf("unknown day %q (use sun, mon, tue, wed, thu, fri, sat)", to)
		}
		for d := a; ; d = (d + 1) % 7 {
			out[d] = true
			if d == b {
				break
			}
		}
	}
	return out, nil
}

// parseHours reads "08:00-20:00" or "22:00-06:00" (crosses midnight), or
// several separated by commas.
func parseHours(s string) ([]span, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return []span{{0, 1440}}, nil
	}
	var out []span
	for _, part := range strings.Split(s, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(part), "-")
		if !ok {
			return nil, fmt.Errorf("hours %q: want HH:MM-HH:MM", part)
		}
		a, err := parseClock(from)
		if err != nil {
			return nil, err
		}
		b, err := parseClock(to)
		if err != nil {
			return nil, err
		}
		if a == b || a == 1440 {
			return nil, fmt.Errorf("hours %q: an empty time range", part)
		}
		if b < a {
			b += 1440
		}
		out = append(out, span{a, b})
	}
	return out, nil
}

func parseClock(s string) (int, error) {
	s = strings.TrimSpace(s)
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &h, &m); err != nil || h > 24 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("time %q: want HH:MM between 00:00 and 24:00", s)
	}
	return h*60 + m, nil
}

// Schedule is a compiled schedule in the syntax of the rule file's
// `schedules` entries, for tools that need the same notion of hours
// outside a rule file (`crmguard audit report`'s business hours).
type Schedule struct{ s schedule }

// ParseSchedule compiles days ("mon-fri", "mon,wed", "daily"), hours
// ("08:00-20:00", "22:00-06:00", several separated by commas) and an IANA
// time zone ("" is UTC, "Local" the machine's zone) as a `schedules` entry
// would be.
func ParseSchedule(days, hours, tz string) (*Schedule, error) {
	sc := schedule{loc: time.UTC}
	var err error
	if sc.days, err = parseDays(days); err != nil {
		return nil, fmt.Errorf("rules: schedule days: %w", err)
	}
	if sc.spans, err = parseHours(hours); err != nil {
		return nil, fmt.Errorf("rules: schedule hours: %w", err)
	}
	if tz != "" {
		if sc.loc, err = time.LoadLocation(tz); err != nil {
			return nil, fmt.Errorf("rules: schedule time zone: %w", err)
		}
	}
	return &Schedule{s: sc}, nil
}

// Contains reports whether t falls in the schedule.
func (s *Schedule) Contains(t time.Time) bool { return s.s.Contains(t) }

// Location is the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.s.loc }

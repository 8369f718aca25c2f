package rules

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // in_schedule must work on machines without zoneinfo
)

// schedule is a compiled `schedules` entry: the days of the week and the
// times of day, in one IANA time zone.
type schedule struct {
	days  [7]bool // by time.Weekday
	spans []span  // minutes since midnight; end may exceed 1440 (crosses midnight)
	loc   *time.Location
}

type span struct{ start, end int }

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

// Contains reports whether t falls in the schedule (cond.Schedule, for
// in_schedule). A time range that crosses midnight belongs to the day it
// starts on.
func (s *schedule) Contains(t time.Time) bool {
	t = t.In(s.loc)
	mins := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	prev := (day + 6) % 7
	for _, sp := range s.spans {
		if s.days[day] && mins >= sp.start && mins < sp.end {
			return true
		}
		if sp.end > 1440 && s.days[prev] && mins < sp.end-1440 {
			return true
		}
	}
	return false
}

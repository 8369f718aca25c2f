package rules

import (
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

package cond

import "time"

// canonicalUTC reads the canonical form of a UTC instant in whole seconds,
// exactly YYYY-MM-DDThh:mm:ssZ (upper-case T and Z, no fraction), as Unix
// seconds, with the checks CEL's timestamp(string) makes: month 01-12, a day
// that exists in that month, hours 00-23, minutes and seconds 00-59, years
// 0001-9999. ok is false for every other string, which then goes through
// celTimestamp: a fast path, never a different answer (FuzzCELTimestamp
// checks both against CEL).
func canonicalUTC(s string) (int64, bool) {
	if len(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z' {
		return 0, false
	}
	// two digits at i as a number, or -1
	two := func(i int) int {
		a, b := s[i]-'0', s[i+1]-'0'
		if a > 9 || b > 9 {
			return -1
		}
		return int(a)*10 + int(b)
	}
	century, yy := two(0), two(2)
	month, day, hour, minute, sec := two(5), two(8), two(11), two(14), two(17)
	if century < 0 || yy < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return 0, false
	}
	year := century*100 + yy
	if year < 1 {
		return 0, false
	}
	leap := year%4 == 0 && (year%100 != 0 || year%400 == 0)
	if day > 28+int(monthExtra[month]) && !(month == 2 && day == 29 && leap) {
		return 0, false
	}
	return daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec), true
}

// monthExtra is the days of each month beyond 28 (February: 0, leap days
// apart).
var monthExtra = [13]uint8{0, 3, 0, 3, 2, 3, 2, 3, 3, 2, 3, 2, 3}

// daysFromCivil is the number of days from 1970-01-01 to the given date of
// the proleptic Gregorian calendar (Howard Hinnant's days_from_civil).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400 // y >= 0 here
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era*146097 + doe - 719468)
}

// celTimestamp parses s the way CEL's timestamp(string) does when it
// succeeds: strict RFC 3339 (two-digit fields, '.' fractions, Z or ±hh:mm
// with hh ≤ 23), then time.Parse, then the range of years 1 to 9999. ok is
// false whenever CEL would not give a timestamp; FuzzCELTimestamp checks
// that both agree.
func celTimestamp(s string) (time.Time, bool) {
	if !strictRFC3339(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, false
	}
	if u := t.Unix(); u < -62135596800 || u > 253402300799 {
		return time.Time{}, false
	}
	return t, true
}

// strictRFC3339 reports whether s is
// YYYY-MM-DD(T|t)hh:mm:ss[.frac](Z|z|(+|-)hh:mm) with months 01-12, days
// 01-31, hours 00-23, minutes 00-59 and seconds 00-60.
func strictRFC3339(s string) bool {
	if len(s) < 20 {
		return false
	}
	two := func(i int, max int) bool {
		if !isDigit(s[i]) || !isDigit(s[i+1]) {
			return false
		}
		v := int(s[i]-'0')*10 + int(s[i+1]-'0')
		return v <= max
	}
	for i := 0; i < 4; i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	if s[4] != '-' || !two(5, 12) || s[5:7] == "00" || s[7] != '-' || !two(8, 31) || s[8:10] == "00" ||
		(s[10] != 'T' && s[10] != 't') || !two(11, 23) || s[13] != ':' || !two(14, 59) || s[16] != ':' || !two(17, 60) {
		return false
	}
	rest := s[19:]
	if rest[0] == '.' {
		i := 1
		for i < len(rest) && isDigit(rest[i]) {
			i++
		}
		if i == 1 {
			return false
		}
		rest = rest[i:]
	}
	switch {
	case len(rest) == 1:
		return rest[0] == 'Z' || rest[0] == 'z'
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-'):
		zone := "x" + rest[1:] // keep the offsets of two()'s indexes simple
		return isDigit(zone[1]) && isDigit(zone[2]) && int(zone[1]-'0')*10+int(zone[2]-'0') <= 23 &&
			zone[3] == ':' && isDigit(zone[4]) && isDigit(zone[5]) && int(zone[4]-'0')*10+int(zone[5]-'0') <= 59
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

package client

import (
	"fmt"
	"testing"
)

func TestEnvironmentAddsADefaultPATHUnlessGiven(t *testing.T) {
	for _, c := range []struct {
		variables   [][2]string
		defaultPATH string
		want        string
	}{
		{nil, DefaultPATH, "[PATH=" + DefaultPATH + "]"},
		{[][2]string{{"Z", "1"}, {"A", "2"}}, "/bin", "[A=2 PATH=/bin Z=1]"},
		{[][2]string{{"PATH", "/opt/bin"}}, DefaultPATH, "[PATH=/opt/bin]"},
		// An empty PATH given on purpose is kept.
		{[][2]string{{"PATH", ""}}, DefaultPATH, "[PATH=]"},
		{[][2]string{{"HOME", "/"}}, "", "[HOME=/]"},
	} {
		var got []string
		for _, v := range Environment(c.variables, c.defaultPATH) {
			got = append(got, v.Name+"="+v.Value)
		}
		if fmt.Sprint(got) != c.want {
			t.Errorf("Environment(%v, %q) = %v, want %s", c.variables, c.defaultPATH, got, c.want)
		}
	}
}

#include <stdio.h>

#include <greet.h>
#include <shout.h>

int main(void)
{
	char buf[64];

	shout(buf, sizeof buf, "bitzel");
	printf("%s (greet %s, shout %s)\n", buf, greet_version(), shout_version());
	return 0;
}

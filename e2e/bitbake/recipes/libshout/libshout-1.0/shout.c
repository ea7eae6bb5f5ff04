#include <ctype.h>

#include <greet.h>

#include "config.h"
#include "shout.h"

const char *shout_version(void)
{
	return SHOUT_VERSION;
}

int shout(char *buf, size_t size, const char *name)
{
	int n = greet(buf, size, name);
	for (char *p = buf; *p; p++)
		*p = toupper((unsigned char)*p);
	return n;
}

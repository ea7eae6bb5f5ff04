#include <stdio.h>

#include "config.h"
#include "greet.h"

const char *greet_version(void)
{
	return GREET_VERSION;
}

int greet(char *buf, size_t size, const char *name)
{
	return snprintf(buf, size, "Hello, %s!", name);
}

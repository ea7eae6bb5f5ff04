#ifndef SHOUT_H
#define SHOUT_H

#include <stddef.h>

/* The library's version, "1.0". */
const char *shout_version(void);

/* Writes greet(name) in capitals into buf; returns the length it
   needed. */
int shout(char *buf, size_t size, const char *name);

#endif

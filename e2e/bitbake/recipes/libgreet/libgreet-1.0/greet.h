#ifndef GREET_H
#define GREET_H

#include <stddef.h>

/* The library's version, "1.0". */
const char *greet_version(void);

/* Writes "Hello, NAME!" into buf; returns the length it needed. */
int greet(char *buf, size_t size, const char *name);

#endif

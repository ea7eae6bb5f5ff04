#!/bin/sh
echo "coverage is not supported by this stand-in @remote_coverage_tools" >&2
exit 1

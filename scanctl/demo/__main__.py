"""`python -m scanctl.demo ARGS`: run the simulated upstream; the same as `scanctl demo-api ARGS`
(options, help and one-line errors), which tests and benchmarks start this way."""

import sys

from scanctl.cli import main

main(["demo-api", *sys.argv[1:]])

#!/usr/bin/env python
"""Run the fast part of the test suite: everything not marked `slow` (no browser, no long training).

`make test` runs the whole suite; this is the quick loop while you edit.
"""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-m", "not slow and not real", *sys.argv[1:]]))

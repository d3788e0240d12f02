"""What the tests share that is not a test: tiny-model builders, fake hosts, server helpers.

The builders write real architectures at toy sizes, offline, into `.test-cache/` (once per
machine); benchmarks use them too. Fixtures over them live in tests/conftest.py.
"""

"""Embedded stand-ins for the demo and the tests: OpenBao, PostgreSQL and a fake Slack Web API.

Nothing here runs in production; `breakglass demo` and the test suite use these very pieces.
"""

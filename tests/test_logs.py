"""Logs and CLI messages never print registered patient identifiers, and nothing else is mangled."""

from __future__ import annotations

import logging

from planner.logs import REDACTED, RedactingFilter, redact, register_identifier


def test_identifiers_are_redacted_as_whole_words_only():
    register_identifier("Doe^Pre")
    register_identifier("PID-12345")
    assert redact("patient Doe^Pre (PID-12345) loaded") == f"patient {REDACTED} ({REDACTED}) loaded"
    assert redact("name part Pre alone") == f"name part {REDACTED} alone"
    assert redact("unknown procedure preset 'nope'") == "unknown procedure preset 'nope'"
    assert redact("PID-123456 is another id") == "PID-123456 is another id"


def test_log_records_pass_through_the_redacting_filter():
    register_identifier("Smith^Jane")
    record = logging.LogRecord("plexplan", logging.INFO, __file__, 1, "loaded %s", ("Smith^Jane",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"loaded {REDACTED}"


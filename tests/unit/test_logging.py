"""Structured logs: one JSON object per line with context, and no secret ever printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from uuid import uuid4

import pytest

from logiwatch.logging import MASK, RedactingFilter, configure_logging, redact


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """Route the root logger into a buffer for one test, then restore it."""

    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buf = io.StringIO()
    yield buf
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved_handlers:
        root.addHandler(h)
    root.setLevel(saved_level)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_line_has_timestamp_level_logger_message_and_context(capture: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=capture)
    log = logging.getLogger(f"lwtest.{uuid4().hex}")
    log.info("stall on %s", "HUB-7", extra={"waybill_id": "WB42", "alert_id": "a-1", "partition": 3})
    [rec] = lines(capture)
    assert rec["level"] == "INFO"
    assert rec["logger"] == log.name
    assert rec["msg"] == "stall on HUB-7"
    assert rec["waybill_id"] == "WB42" and rec["alert_id"] == "a-1" and rec["partition"] == 3
    assert isinstance(rec["ts"], str) and rec["ts"].endswith("Z") and "T" in rec["ts"]
    # context keys come right after the fixed ones, in a stable order
    assert list(rec)[:7] == ["ts", "level", "logger", "msg", "waybill_id", "alert_id", "partition"]


def test_level_threshold_drops_debug_lines(capture: io.StringIO) -> None:
    configure_logging("WARNING", json=True, stream=capture)
    log = logging.getLogger(f"lwtest.{uuid4().hex}")
    log.info("quiet")
    log.warning("loud")
    assert [r["msg"] for r in lines(capture)] == ["loud"]


def test_reconfiguring_replaces_the_handler_instead_of_duplicating_lines(capture: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=capture)
    configure_logging("INFO", json=True, stream=capture)
    logging.getLogger(f"lwtest.{uuid4().hex}").info("once")
    assert len(lines(capture)) == 1


def test_registered_secret_is_masked_in_message_args_and_extra(capture: io.StringIO) -> None:
    token = f"tok-{uuid4().hex}"
    configure_logging("INFO", json=True, stream=capture, secrets=[token])
    log = logging.getLogger(f"lwtest.{uuid4().hex}")
    log.info("api token is " + token)
    log.info("calling with %s", token, extra={"receiver": f"https://x/?t={token}"})
    out = capture.getvalue()
    assert token not in out
    recs = lines(capture)
    assert recs[0]["msg"] == f"api token is {MASK}"
    assert recs[1]["msg"] == f"calling with {MASK}"
    assert recs[1]["receiver"] == f"https://x/?t={MASK}"


def test_traceback_text_is_redacted(capture: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=capture)
    log = logging.getLogger(f"lwtest.{uuid4().hex}")
    secret = "whsec_" + uuid4().hex
    try:
        raise RuntimeError(f"receiver rejected signature with key {secret}")
    except RuntimeError:
        log.exception("delivery failed")
    [rec] = lines(capture)
    assert "RuntimeError" in str(rec["exc"])
    assert secret not in capture.getvalue()


def test_text_mode_is_one_readable_line_and_still_redacts(capture: io.StringIO) -> None:
    configure_logging("INFO", json=False, stream=capture)
    logging.getLogger("lwtest.text").info("Authorization: Bearer abc.def.ghi", extra={"alert_id": "a-9"})
    out = capture.getvalue().strip()
    assert "\n" not in out
    assert "abc.def.ghi" not in out
    assert "lwtest.text" in out and "alert_id=a-9" in out


@pytest.mark.parametrize(
    ("raw", "leaked"),
    [
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ok", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("headers {'Authorization': 'Bearer eyJhbGciOi.J9x_y-z'}", "eyJhbGciOi.J9x_y-z"),
        ("GET /alerts?token=s3cr3tvalue&x=1", "s3cr3tvalue"),
        ("password: hunter2hunter2", "hunter2hunter2"),
        ('{"api_token": "zzz-123-yyy"}', "zzz-123-yyy"),
        ("connect redis://default:pa55word@redis:6379/0 failed", "pa55word"),
        ("basic auth Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ],
)
def test_secret_shapes_are_masked_without_registration(raw: str, leaked: str) -> None:
    out = redact(raw)
    assert leaked not in out
    assert MASK in out


def test_ordinary_text_passes_through_unchanged() -> None:
    text = "parcel WB1 stalled at HUB-3 for 7200 s (partition 2, offset 99); 3 tokens of evidence"
    assert redact(text, secrets=["not-in-text"]) == text


def test_filter_keeps_every_record_and_ignores_too_short_secrets() -> None:
    f = RedactingFilter(secrets=["", "ab", "long-secret-value"])
    rec = logging.makeLogRecord({"msg": "ab long-secret-value", "args": None})
    assert f.filter(rec) is True
    assert rec.getMessage() == f"ab {MASK}"


def test_unserialisable_context_does_not_lose_the_line(capture: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=capture)
    logging.getLogger(f"lwtest.{uuid4().hex}").info("odd", extra={"partition": {1, 2}.__class__})
    [rec] = lines(capture)
    assert rec["msg"] == "odd" and "set" in str(rec["partition"])

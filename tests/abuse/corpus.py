"""The bad-input corpus: malformed batch files, uploads and create calls, each with
the answer batchd must give.

Built in code (the 10 MB lines would be silly as checked-in files). Every entry
names what it tries, the bytes, and the verdict: the batch's final status and
its ``errors.data`` codes for files that upload fine, or the HTTP status and
error code for uploads and create calls that are refused outright.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EP = "/v1/chat/completions"
MAX_TASKS = 100
MAX_ERRORS = 20
MAX_BATCH_FILE = 12 * 1024 * 1024
TEN_MB = 10 * 1024 * 1024


def line(i: int | str = 0, **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "custom_id": f"r{i}",
        "method": "POST",
        "url": EP,
        "body": {"model": "test-model", "messages": [{"role": "user", "content": f"hi {i}"}]},
    }
    for key, value in over.items():
        if key.startswith("body_"):
            obj["body"][key[5:]] = value
        else:
            obj[key] = value
    return obj


def without(key: str, i: int = 0) -> dict[str, Any]:
    obj = line(i)
    if key.startswith("body_"):
        del obj["body"][key[5:]]
    else:
        del obj[key]
    return obj


def enc(*objs: dict[str, Any] | bytes, sep: bytes = b"\n") -> bytes:
    parts = [o if isinstance(o, bytes) else json.dumps(o).encode() for o in objs]
    return sep.join(parts) + sep


GOOD = enc(line(0), line(1))


@dataclass(frozen=True)
class FileCase:
    """A file that uploads fine; the batch made from it ends ``status`` with ``codes``."""

    name: str
    data: bytes
    status: str
    codes: frozenset[str] = frozenset()

    @property
    def custom_ids(self) -> list[str]:
        """The ids a completed batch must answer (read back from the valid file)."""
        out = []
        for raw in self.data.removeprefix(b"\xef\xbb\xbf").splitlines():
            if raw.strip():
                out.append(json.loads(raw)["custom_id"])
        return out


def failed(name: str, data: bytes, *codes: str) -> FileCase:
    return FileCase(name, data, "failed", frozenset(codes))


def completed(name: str, data: bytes) -> FileCase:
    return FileCase(name, data, "completed")


FILE_CASES: list[FileCase] = [
    # --- framing and encoding
    failed(
        "truncated_json",
        b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/com',
        "invalid_json_line",
    ),
    failed("truncated_last_line", GOOD + b'{"custom_id": "r9", "body": {', "invalid_json_line"),
    completed("bom_then_jsonl", b"\xef\xbb\xbf" + GOOD),
    failed(
        "bom_on_second_line",
        enc(line(0), b"\xef\xbb\xbf" + enc(line(1)).strip()),
        "invalid_json_line",
    ),
    completed("crlf_line_endings", enc(line(0), line(1), sep=b"\r\n")),
    failed("cr_only_line_endings", enc(line(0), line(1), sep=b"\r"), "invalid_json_line"),
    failed(
        "latin1_not_utf8",
        enc(line(0, body_messages=[])).replace(b"[]", b'[{"role": "user", "content": "caf\xe9"}]'),
        "invalid_json_line",
    ),
    failed("utf16_file", GOOD.decode().encode("utf-16"), "invalid_json_line"),
    failed(
        "invalid_utf8_in_custom_id",
        enc(line(0, custom_id="@@")).replace(b"@@", b"\xff\xfe"),
        "invalid_json_line",
    ),
    failed(
        "nul_byte_between_tokens", enc(line(0)).replace(b", ", b",\x00 ", 1), "invalid_json_line"
    ),
    failed(
        "deep_nesting_100k",
        enc(line(0, body_x="@@")).replace(b'"@@"', b"[" * 100_000 + b"]" * 100_000) + b"}}\n",
        "invalid_json_line",
    ),
    completed("deep_nesting_200", enc(line(0, body_metadata=json.loads("[" * 200 + "]" * 200)))),
    completed(
        "ten_mb_single_line",
        enc(line(0, body_messages=[{"role": "user", "content": "x" * TEN_MB}])),
    ),
    failed("ten_mb_garbage_line", b"{" + b"a" * TEN_MB + b"\n", "invalid_json_line"),
    failed(
        "json_array_not_jsonl", json.dumps([line(0), line(1)]).encode() + b"\n", "invalid_json_line"
    ),
    failed(
        "pretty_printed_object", json.dumps(line(0), indent=2).encode() + b"\n", "invalid_json_line"
    ),
    failed("scalar_lines", b'42\nnull\n"text"\ntrue\n', "invalid_json_line"),
    failed("trailing_comma", enc(line(0)).replace(b"}\n", b",}\n", 1), "invalid_json_line"),
    failed("single_quotes", b"{'custom_id': 'a', 'method': 'POST'}\n", "invalid_json_line"),
    failed(
        "nan_literal",
        enc(line(0)).replace(b'"test-model"', b'"test-model", "temperature": NaN'),
        "invalid_json_line",
    ),
    failed("empty_file", b"", "empty_file"),
    failed("only_blank_lines", b"\n\n   \n\t\n\r\n", "empty_file"),
    completed("blank_lines_between", b"\n" + enc(line(0)) + b"\n  \n\t\n" + enc(line(1)) + b"\n\n"),
    completed("no_final_newline", GOOD.rstrip(b"\n")),
    # --- wrong types in every field
    failed("custom_id_int", enc(line(0, custom_id=7)), "invalid_type"),
    failed("custom_id_object", enc(line(0, custom_id={"a": 1})), "invalid_type"),
    failed("custom_id_null", enc(line(0, custom_id=None)), "missing_required_parameter"),
    failed("custom_id_empty", enc(line(0, custom_id="")), "invalid_value"),
    failed("custom_id_too_long", enc(line(0, custom_id="x" * 513)), "invalid_value"),
    failed("method_int", enc(line(0, method=1)), "invalid_type"),
    failed("method_get", enc(line(0, method="GET")), "invalid_value"),
    failed("url_int", enc(line(0, url=5)), "invalid_type"),
    failed("url_list", enc(line(0, url=[EP])), "invalid_type"),
    failed("body_string", enc(line(0, body="{}")), "invalid_type"),
    failed("body_list", enc(line(0, body=[{"model": "m"}])), "invalid_type"),
    failed("model_int", enc(line(0, body_model=3)), "invalid_type"),
    failed("model_empty", enc(line(0, body_model="")), "invalid_type"),
    failed("stream_true", enc(line(0, body_stream=True)), "streaming_unsupported"),
    failed("missing_custom_id", enc(without("custom_id")), "missing_required_parameter"),
    failed("missing_method", enc(without("method")), "missing_required_parameter"),
    failed("missing_url", enc(without("url")), "missing_required_parameter"),
    failed("missing_body", enc(without("body")), "missing_required_parameter"),
    failed("missing_model", enc(without("body_model")), "missing_required_parameter"),
    failed("missing_messages", enc(without("body_messages")), "missing_required_parameter"),
    failed("messages_null", enc(line(0, body_messages=None)), "missing_required_parameter"),
    # --- where a line may send its request
    failed(
        "url_foreign_host",
        enc(line(0, url="http://evil.example/v1/chat/completions")),
        "invalid_url",
    ),
    failed(
        "url_scheme_relative_host",
        enc(line(0, url="//evil.example/v1/chat/completions")),
        "invalid_url",
    ),
    failed("url_other_endpoint", enc(line(0, url="/v1/embeddings")), "invalid_url"),
    failed("url_traversal", enc(line(0, url="/v1/chat/completions/../../admin")), "invalid_url"),
    failed("url_query_string", enc(line(0, url="/v1/chat/completions?x=1")), "invalid_url"),
    # --- file-level rules
    failed("duplicate_custom_id", enc(line(0), line(0)), "duplicate_custom_id"),
    failed(
        "duplicate_unicode_custom_id", enc(line("\u00e9"), line("\u00e9")), "duplicate_custom_id"
    ),
    failed("model_mismatch", enc(line(0), line(1, body_model="other")), "model_mismatch"),
    failed("too_many_tasks", enc(*[line(i) for i in range(MAX_TASKS + 1)]), "too_many_tasks"),
    failed("too_many_errors", b"nope\n" * (MAX_ERRORS + 5), "invalid_json_line", "too_many_errors"),
    failed(
        "mixed_errors",
        enc(line(0), b"oops", line(0), line(2, body_model="x")),
        "invalid_json_line",
        "duplicate_custom_id",
        "model_mismatch",
    ),
    # --- odd but valid
    completed(
        "unicode_custom_ids",
        enc(
            line("\U0001f600"),
            line("\u202eabc"),
            line("a\u200bb"),
            line("e\u0301"),
            line("\u00e9"),
            line("../../etc/passwd"),
            line("nul\u0000"),
        ),
    ),
    completed(
        "unknown_extra_fields", enc(line(0, extra={"x": 1}, body_base_url="http://evil.example/v1"))
    ),
    completed(
        "huge_exponent_number",
        enc(line(0, body_temperature=1)).replace(b'"temperature": 1', b'"temperature": 1e308'),
    ),
]


@dataclass(frozen=True)
class UploadCase:
    """A ``POST /v1/files`` refused (or accepted) at once: HTTP ``status`` and ``code``."""

    name: str
    fields: dict[str, str]
    files: list[tuple[str, bytes]]
    status: int
    code: str | None = None
    content_type: str | None = None
    """Override the multipart content type (for non-multipart bodies)."""
    raw: bytes | None = None


UPLOAD_CASES: list[UploadCase] = [
    UploadCase(
        "json_extension", {"purpose": "batch"}, [("input.json", GOOD)], 400, "invalid_file_format"
    ),
    UploadCase("no_extension", {"purpose": "batch"}, [("input", GOOD)], 400, "invalid_file_format"),
    UploadCase(
        "unknown_purpose", {"purpose": "evil"}, [("input.jsonl", GOOD)], 400, "invalid_value"
    ),
    UploadCase("missing_purpose", {}, [("input.jsonl", GOOD)], 400, "missing_required_parameter"),
    UploadCase("missing_file", {"purpose": "batch"}, [], 400, "missing_required_parameter"),
    UploadCase(
        "two_files",
        {"purpose": "batch"},
        [("a.jsonl", GOOD), ("b.jsonl", GOOD)],
        400,
        "invalid_value",
    ),
    UploadCase(
        "over_batch_limit",
        {"purpose": "batch"},
        [("big.jsonl", b"x" * (MAX_BATCH_FILE + 1))],
        413,
        "file_too_large",
    ),
    UploadCase(
        "expires_not_a_number",
        {
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "soon",
        },
        [("input.jsonl", GOOD)],
        400,
        "invalid_value",
    ),
    UploadCase(
        "expires_too_short",
        {"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "5"},
        [("input.jsonl", GOOD)],
        400,
        "invalid_value",
    ),
    UploadCase(
        "expires_bad_anchor",
        {"purpose": "batch", "expires_after[anchor]": "now", "expires_after[seconds]": "3600"},
        [("input.jsonl", GOOD)],
        400,
        "invalid_value",
    ),
    UploadCase(
        "huge_form_field", {"purpose": "b" * 100_000}, [("input.jsonl", GOOD)], 400, "invalid_value"
    ),
    UploadCase(
        "not_multipart",
        {},
        [],
        400,
        "invalid_content_type",
        content_type="application/json",
        raw=b'{"purpose": "batch"}',
    ),
    UploadCase(
        "multipart_without_boundary",
        {},
        [],
        400,
        "invalid_content_type",
        content_type="multipart/form-data",
        raw=b"--x\r\n",
    ),
    UploadCase(
        "multipart_wrong_boundary",
        {},
        [],
        400,
        "invalid_multipart",
        content_type="multipart/form-data; boundary=zzz",
        raw=b'--other\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--other--\r\n",
    ),
    UploadCase(
        "multipart_garbage",
        {},
        [],
        400,
        None,
        content_type="multipart/form-data; boundary=b",
        raw=b"--b\r\n\x00\x01\x02garbage\r\n\r\n",
    ),
    UploadCase("path_in_filename", {"purpose": "batch"}, [("../../etc/passwd.jsonl", GOOD)], 200),
    UploadCase(
        "unicode_filename", {"purpose": "batch"}, [("r\u00e9sum\u00e9 \U0001f600.jsonl", GOOD)], 200
    ),
]


@dataclass(frozen=True)
class CreateCase:
    """A ``POST /v1/batches`` body refused at once."""

    name: str
    body: Any
    status: int
    code: str


UNKNOWN_INPUT_FILES = ["../../etc/passwd", "file-000000000000", "", "\u00e9" * 40]
"""``input_file_id`` values naming no file: the batch is created and fails at once
(code ``invalid_request``, param ``file_id``), as OpenAI answers."""

CREATE_FILE = "file-PLACEHOLDER0000"
"""Stands for a real uploaded batch file in :func:`create_cases`."""


def create_cases(file_id: str) -> list[CreateCase]:
    ok = {"input_file_id": file_id, "endpoint": EP, "completion_window": "24h"}
    return [
        CreateCase("input_file_id_int", {**ok, "input_file_id": 5}, 400, "invalid_value"),
        CreateCase(
            "missing_input_file_id",
            {"endpoint": EP, "completion_window": "24h"},
            400,
            "invalid_value",
        ),
        CreateCase("endpoint_unknown", {**ok, "endpoint": "/v1/admin"}, 400, "invalid_value"),
        CreateCase(
            "endpoint_foreign_host",
            {**ok, "endpoint": "http://evil.example/v1/chat/completions"},
            400,
            "invalid_value",
        ),
        CreateCase(
            "completion_window_bad", {**ok, "completion_window": "forever"}, 400, "invalid_value"
        ),
        CreateCase(
            "metadata_17_pairs",
            {**ok, "metadata": {f"k{i}": "v" for i in range(17)}},
            400,
            "invalid_value",
        ),
        CreateCase("metadata_long_key", {**ok, "metadata": {"k" * 65: "v"}}, 400, "invalid_value"),
        CreateCase(
            "metadata_long_value", {**ok, "metadata": {"k": "v" * 513}}, 400, "invalid_value"
        ),
        CreateCase("metadata_int_value", {**ok, "metadata": {"k": 1}}, 400, "invalid_value"),
        CreateCase("metadata_list", {**ok, "metadata": ["k", "v"]}, 400, "invalid_value"),
        CreateCase(
            "metadata_lone_surrogate", {**ok, "metadata": {"k": "\udb16"}}, 400, "invalid_value"
        ),
        CreateCase(
            "input_file_id_lone_surrogate", {**ok, "input_file_id": "\ud9f8"}, 400, "invalid_value"
        ),
        CreateCase(
            "output_expires_too_short",
            {**ok, "output_expires_after": {"anchor": "created_at", "seconds": 1}},
            400,
            "invalid_value",
        ),
        CreateCase("body_is_array", [ok], 400, "invalid_value"),
        CreateCase("body_is_null", None, 400, "invalid_value"),
    ]

import json

import pytest

from sq_trt.data import (
    EMBEDDED,
    check_disjoint,
    check_slices_disjoint,
    embedded_text,
    load_slices,
    load_text,
    split_calibration_evaluation,
    tokenize_chunks,
)
from sq_trt.errors import DataError
from sq_trt.models.tiny import byte_tokenizer


def test_embedded_text_is_large_prose():
    text = embedded_text()
    assert len(text) > 400_000
    assert "assert" in text and "lambda" in text


def test_slices_are_disjoint_and_cover_the_text():
    text = embedded_text()
    calib, evaluation = split_calibration_evaluation(text, calib_fraction=0.5)
    assert calib.end == evaluation.start
    assert calib.text + evaluation.text == text
    assert abs(calib.end - len(text) / 2) < 20_000  # cut at a paragraph boundary near the middle
    check_slices_disjoint(calib, evaluation)
    overlapping = type(evaluation)(EMBEDDED, "evaluation", calib.end - 10, len(text), "", calib.source_hash)
    with pytest.raises(DataError, match="overlap"):
        check_slices_disjoint(calib, overlapping)


def test_chunks_are_deterministic_and_exact():
    tok = byte_tokenizer()
    calib, evaluation = load_slices()
    a = tokenize_chunks(tok, calib, seq_len=64, max_chunks=5)
    b = tokenize_chunks(tok, calib, seq_len=64, max_chunks=5)
    assert a.shape == (5, 64) and a.dtype.is_floating_point is False
    assert (a == b).all()
    # Byte tokenizer: chunk i is bytes [64 i, 64 (i + 1)) of the (ASCII-dominated) text's encoding.
    ids = tok(calib.text[:2000], add_special_tokens=False)["input_ids"]
    assert a[0].tolist() == ids[:64]
    e = tokenize_chunks(tok, evaluation, seq_len=64, max_chunks=5)
    check_disjoint(a, e)
    with pytest.raises(DataError, match="also appear in the calibration"):
        check_disjoint(a, a[2:4])


def test_too_short_and_empty_data(tmp_path):
    tok = byte_tokenizer()
    short = tmp_path / "short.txt"
    short.write_text("a few words\n\nand a few more")
    calib, _ = load_slices(str(short))
    with pytest.raises(DataError, match="fewer than one chunk"):
        tokenize_chunks(tok, calib, seq_len=512)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        load_text(str(empty))
    with pytest.raises(DataError, match="not a file"):
        load_text(str(tmp_path / "missing.txt"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="suffix"):
        load_text(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="calib_fraction"):
        split_calibration_evaluation("abc", calib_fraction=1.0)


def test_jsonl_with_text_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"document {i}"}) for i in range(3)))
    assert load_text(str(path), text_column="body") == "document 0\n\ndocument 1\n\ndocument 2"
    with pytest.raises(DataError, match="no column 'text'.*body"):
        load_text(str(path))
